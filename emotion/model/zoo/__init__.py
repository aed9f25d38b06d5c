"""The model zoo: the seed descriptions' video emotion architectures beside STNet, each a ClipModel with its own
config dataclass, registered by name for `--arch` (emotion.model.clip.register_arch)."""

from emotion.model.zoo import conv3d, hourglass, recurrent, transformers, tsm  # noqa: F401
