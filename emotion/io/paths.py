"""Output paths that never destroy the user's files: outputs distinct from the inputs and from each other, and
unique, predictable names for the outputs of a batch."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from emotion.errors import EmotionError


def same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` name one file: the same inode where both exist (symlinks, hard links, `..`), else the
    same resolved path."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_distinct(inputs: Iterable[str | Path], outputs: Iterable[str | Path | None]) -> None:
    """Refuse, before anything is opened for writing, an output that is one of the inputs or another output."""
    ins = [Path(p) for p in inputs]
    outs = [Path(p) for p in outputs if p is not None]
    for out in outs:
        for source in ins:
            if same_file(out, source):
                raise EmotionError(
                    f"the output {out} is the input {source}: writing it would destroy the input",
                    fix="choose another output name",
                )
    for k, a in enumerate(outs):
        for b in outs[k + 1 :]:
            if same_file(a, b):
                raise EmotionError(
                    f"two outputs of this run are the same file: {a} and {b}", fix="give each output its own name"
                )


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """A name per input for its outputs, unique within the batch: the file's stem; where stems repeat, the stem with
    the suffix when the suffixes differ (talk_mp4, talk_avi), else with the folder in front when the folders differ
    (a_face, b_face); what still repeats gets a number in input order (face_2)."""
    names = [p.stem for p in paths]
    widenings = (lambda p: p.suffix.lstrip("."), lambda p: p.parent.name)
    for part, suffix_side in zip(widenings, (True, False)):
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name, []).append(i)
        for members in groups.values():
            if len(members) > 1 and len({part(paths[i]) for i in members}) > 1:
                for i in members:
                    extra = part(paths[i])
                    names[i] = (f"{names[i]}_{extra}" if suffix_side else f"{extra}_{names[i]}") if extra else names[i]
    seen: Counter = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique
