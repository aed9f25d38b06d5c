"""Output paths: an output is never an input or another output, and batch outputs get unique, predictable names."""

import os
from pathlib import Path

import pytest

from emotion.errors import EmotionError
from emotion.io.paths import check_distinct, same_file, unique_stems


def test_same_file_sees_through_symlinks_hard_links_and_dot_dot(tmp_path):
    original = tmp_path / "clip.mp4"
    original.write_bytes(b"x")
    (tmp_path / "link.mp4").symlink_to(original)
    os.link(original, tmp_path / "hard.mp4")
    (tmp_path / "sub").mkdir()
    for alias in ("link.mp4", "hard.mp4", "sub/../clip.mp4", "missing/../clip.mp4"):
        assert same_file(tmp_path / alias, original), alias
    assert not same_file(tmp_path / "other.mp4", original)
    (tmp_path / "copy.mp4").write_bytes(b"x")
    assert not same_file(tmp_path / "copy.mp4", original)


def test_check_distinct_refuses_an_input_as_output_and_two_equal_outputs(tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"x")
    with pytest.raises(EmotionError, match="is the input"):
        check_distinct([source], [None, tmp_path / "out.json", tmp_path / "." / "in.mp4"])
    with pytest.raises(EmotionError, match="same file"):
        check_distinct([source], [tmp_path / "a.json", tmp_path / "b" / ".." / "a.json"])
    check_distinct([source], [tmp_path / "a.json", tmp_path / "a.csv", None])


def test_unique_stems_are_predictable():
    paths = [Path("a/face.jpg"), Path("b/face.jpg"), Path("c/talk.mp4"), Path("c/talk.avi"), Path("solo.png")]
    assert unique_stems(paths) == ["a_face", "b_face", "talk_mp4", "talk_avi", "solo"]
    assert unique_stems([Path("x/a.jpg"), Path("x/a.jpg")]) == ["a", "a_2"]
    assert unique_stems([Path("x/a.jpg"), Path("y/a.png")]) == ["a_jpg", "a_png"]
