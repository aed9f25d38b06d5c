"""Wording shared by the reports that training, evaluation and the video runs print."""


def plural(n: int, noun: str) -> str:
    """'1 clip', '0 clips', '3 clips': a count with its noun in the number it needs (regular plurals only)."""
    return f"{n} {noun if n == 1 else noun + 's'}"
