"""The count wording every report shares."""

from emotion.text import plural


def test_plural_takes_the_number_of_its_count():
    assert [plural(n, "clip") for n in (0, 1, 2)] == ["0 clips", "1 clip", "2 clips"]
    assert plural(1, "face detection") == "1 face detection" and plural(12, "step") == "12 steps"
