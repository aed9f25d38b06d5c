"""Options generated from config dataclasses: flags, defaults and help from the fields, the config built back from
the parsed options, shared flags read once, and a config's refusal worded with flags."""

import argparse
from dataclasses import dataclass

import pytest

from emotion.configargs import ConfigError, add_options, check_min, from_namespace, option, option_name


@dataclass(frozen=True)
class Toy:
    path: str = option("input file", metavar="PATH")
    size: int = option("side in pixels", 64, metavar="PX")
    rate: float = option("learning rate", 3e-4, metavar="X")
    mode: str = option("how to go", "fast", choices=("fast", "slow"))
    limit: int | None = option("largest count", None, metavar="N", default_text="no limit")
    colour: bool = option("colour output", False)
    cache: bool = option("skip the cache", True)
    resume: str | None = option("continue a run", None, metavar="FILE", const="auto")
    split: str = option("which part", "all", name="--part")
    hidden: int = 3

    def __post_init__(self) -> None:
        check_min(self, 1, "size", "limit")


@dataclass(frozen=True)
class Other:
    size: int = option("side of something else", 32)
    hidden: int = 5


def parser_for(*classes: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, *classes)
    return p


def test_defaults_and_help_come_from_the_dataclass():
    p = parser_for(Toy)
    assert from_namespace(Toy, p.parse_args(["--path", "a"])) == Toy(path="a")
    text = " ".join(p.format_help().split())
    for expected in ("--size PX side in pixels (default: 64)", "--rate X learning rate (default: 0.0003)",
                     "--limit N largest count (default: no limit)", "--no-cache skip the cache",
                     "--part PART which part (default: all)", "--resume [FILE]", "{fast,slow}"):  # fmt: skip
        assert expected in text
    assert "--hidden" not in text and "(default: True)" not in text and "--colour colour output (default" not in text
    assert [option_name(f) for f in Toy.__dataclass_fields__.values() if f.metadata][-2:] == ["--resume", "--part"]


def test_given_options_reach_their_fields():
    p = parser_for(Toy)
    argv = ["--path", "a", "--size", "8", "--rate", "0.1", "--mode", "slow", "--limit", "2", "--colour", "--no-cache",
            "--resume", "--part", "val"]  # fmt: skip
    toy = from_namespace(Toy, p.parse_args(argv))
    assert toy == Toy("a", 8, 0.1, "slow", 2, True, False, "auto", "val")
    assert from_namespace(Toy, p.parse_args(["--path", "a", "--resume", "x.pt"])).resume == "x.pt"
    assert from_namespace(Toy, p.parse_args(["--path", "a"]), hidden=7).hidden == 7
    with pytest.raises(SystemExit):
        p.parse_args(["--path", "a", "--mode", "medium"])


def test_refusal_names_fields_in_the_library_and_flags_on_the_command_line():
    with pytest.raises(ConfigError, match="^limit must be 1 or more, got 0$"):
        Toy(path="a", limit=0)
    p = parser_for(Toy)
    with pytest.raises(ValueError, match="^--size must be 1 or more, got 0$"):
        from_namespace(Toy, p.parse_args(["--path", "a", "--size", "0"]))
    assert ConfigError("{} and {} clash", "a_b", "c").text(lambda n: n.upper()) == "A_B and C clash"


def test_a_shared_flag_is_declared_once_and_read_by_every_config():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, help="declared by hand")
    add_options(p, Toy, Other)
    assert "declared by hand" in p.format_help() and "side of something else" not in p.format_help()
    args = p.parse_args(["--path", "a"])
    assert from_namespace(Toy, args).size == 64 and from_namespace(Other, args).size == 32  # each its own default
    args = p.parse_args(["--path", "a", "--size", "9"])
    assert from_namespace(Toy, args).size == from_namespace(Other, args).size == 9


@dataclass(frozen=True)
class Listed:
    show: tuple[str, ...] = option("what to draw", (), metavar="WHAT", choices=("a", "b", "c"), default_text="none")


def test_a_list_option_takes_commas_and_repeats_each_name_once_in_order():
    p = parser_for(Listed)
    assert from_namespace(Listed, p.parse_args([])).show == ()
    assert from_namespace(Listed, p.parse_args(["--show", "b,a", "--show", "c", "--show", "a"])).show == ("b", "a", "c")
    assert "--show WHAT what to draw (default: none)" in " ".join(p.format_help().split())
    for wrong in ("d", "a,d", ","):
        with pytest.raises(SystemExit):
            p.parse_args(["--show", wrong])
