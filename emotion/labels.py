"""Emotion categories and their place on the valence-arousal circumplex.

Valence and arousal follow the AffectNet / Aff-Wild2 convention: both in [-1, 1], valence negative for unpleasant
and positive for pleasant, arousal negative for calm and positive for excited.
"""

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "angry": (-0.52, 0.58),
    "disgust": (-0.60, 0.35),
    "fear": (-0.34, 0.64),
    "happy": (0.83, 0.53),
    "neutral": (0.0, 0.0),
    "sad": (-0.65, -0.27),
    "surprise": (0.16, 0.89),
}
"""(valence, arousal) of each category: the positions of the matching affect words in Russell's circumplex
(J. A. Russell, "A circumplex model of affect", J. Pers. Soc. Psychol. 39(6):1161-1178, 1980, Fig. 4), read off the
figure and rounded to two decimals: angry = "angry", fear = "afraid", happy = "happy", sad = "sad",
surprise = "astonished", neutral = the centre. "Disgust" is not one of Russell's 28 words; it sits between
"annoyed" and "distressed", unpleasant and moderately aroused. A model whose valence/arousal head is untrained (the
default model; STNet.affect_source 'circumplex') reports the probability-weighted mean of these points."""


def circumplex_matrix() -> list[list[float]]:
    """The coordinates as a (7, 2) nested list in LABELS order, for tensors and arrays."""
    return [list(CIRCUMPLEX[name]) for name in LABELS]


FER2013_TRAIN_COUNTS: tuple[int, ...] = (3995, 436, 4097, 7215, 4965, 4830, 3171)
"""Images per category, in LABELS order, of the FER2013 training split (28,709 images; Goodfellow et al.,
"Challenges in representation learning", ICONIP 2013) that the shipped frame network learned from: its prior."""
