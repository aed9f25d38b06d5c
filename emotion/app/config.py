"""Settings of the live view, kept apart from its code so the command line can declare them without loading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emotion.configargs import option
from emotion.objects import ObjectConfig
from emotion.overlay import OverlayConfig


@dataclass(frozen=True)
class RealtimeConfig:
    """How the live loop runs and what it writes."""

    headless: bool = option(  # no window: run the same loop for servers, writing only the asked-for outputs
        "run the live loop without a window (servers), writing --output/--json/--csv", False
    )
    sync: bool = option(  # a video file plays at its own frame rate, skipping frames the loop is too slow for
        "play a video file as fast as possible (every frame) instead of at its own frame rate", True
    )
    output: Path | None = None  # annotated video of the whole session (.mp4: H.264, or .avi: MJPG)
    json_path: Path | None = None  # per-frame JSON of the whole session
    csv_path: Path | None = None  # one CSV row per face per frame for the whole session
    overwrite: bool = True  # replace existing output files
    save_dir: Path = option(  # folder for screenshots (s) and recordings (r)
        "folder for screenshots (key s) and recordings (key r)", Path("captures"), metavar="DIR"
    )
    objects: bool = False  # start with YOLO object boxes on (o toggles them)
    object_config: ObjectConfig = ObjectConfig()  # the YOLO model used for object boxes
    overlay: OverlayConfig = OverlayConfig()  # what is drawn; keys b, p and g toggle the face signals of `show`
    show_help: bool = True  # the key help line at the bottom (h toggles it)
    window: str = "emotion"  # window title
    max_frames: int | None = None  # stop after this many processed frames (None: until the source ends or q)
    progress: bool = True  # headless: a status line on stderr every few seconds
