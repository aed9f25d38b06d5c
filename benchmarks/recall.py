"""Face recall of the face stage: `python -m benchmarks.recall` prints one line per case of the README's
"Which faces it finds" table and writes benchmarks/recall.json.

Cases: ultralytics' `zidane.jpg` as the zooming clip the demo used to be (both faces, the shouting one angry),
`../shared/data/faces/` (labelled photos, many pre-cropped) without a face, a 20-face mosaic clip from the shared
photos, `group.jpeg` and `multi_face.jpg`, false faces on `face_noface.mov`'s faceless frames and on made-up
non-face images, and the `--video` JSON-only rate on the Wolfgang clip against the face mesh alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.support import ROOT, SHARED, crowd_frames, nonface_images, read_frames, zidane_frames

RESULTS = ROOT / "benchmarks" / "recall.json"
NOFACE_FROM = 72  # face_noface.mov: frames from here on hold no face (shared data README)


def photo_paths() -> list[Path]:
    return sorted(p for p in (SHARED / "faces").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def still_counts(paths_or_images, face_config) -> list[int]:
    """Faces found per image by the image mode of the face stage."""
    from emotion.face import FaceAnalyzer
    from emotion.io.files import read_image

    with FaceAnalyzer(face_config, static=True) as analyzer:
        return [len(analyzer(read_image(p) if isinstance(p, Path) else p)) for p in paths_or_images]


def zidane_case(recognizer) -> dict:
    """Frames with both faces, and the shouting (left) face's emotion, through the streaming recognizer."""
    both, angry, shouting = 0, 0, 0
    recognizer.reset()
    frames = zidane_frames()
    for i, frame in enumerate(frames):
        faces = recognizer.step(frame, i, i / 24.0).faces
        both += len(faces) >= 2
        left = [f for f in faces if f.box[0] + f.box[2] / 2 < frame.shape[1] * 0.55]
        if left:
            shouting += 1
            angry += left[0].emotion == "angry"
    return {"frames": len(frames), "both_faces": both, "shouting_face": shouting, "shouting_angry": angry}


def crowd_case(face_config, faces: int = 20, frames: int = 60) -> dict:
    """The 20-face mosaic clip through the streaming recognizer: faces per frame, first frame with all, fps."""
    from emotion.recognizer import EmotionRecognizer

    clip = crowd_frames(faces, frames)
    found, times = [], []
    with EmotionRecognizer(face_config=face_config) as rec:
        for i, frame in enumerate(clip):
            t0 = time.perf_counter()
            found.append(len(rec.step(frame, i, i / 25.0).faces))
            times.append(time.perf_counter() - t0)
    first_all = next((i for i, n in enumerate(found) if n >= faces), None)
    return {
        "faces": faces,
        "first_frame_all": first_all,
        "max_at_once": max(found),
        "median_found": float(np.median(found)),
        "fps": (len(times) - 1) / sum(times[1:]),
    }


def noface_case(recognizer) -> dict:
    """Faces reported on face_noface.mov's faceless frames, in video mode."""
    recognizer.reset()
    false = 0
    frames = read_frames(SHARED / "videos" / "face_noface.mov")
    for i, frame in enumerate(frames):
        n = len(recognizer.step(frame, i, i / 26.4).faces)
        if i >= NOFACE_FROM:
            false += n
    return {"faceless_frames": len(frames) - NOFACE_FROM, "false_faces": false}


def speed_case(repeats: int) -> dict:
    """`--video` JSON-only rate on the Wolfgang clip and the face mesh alone, interleaved, medians."""
    from benchmarks.run import mesh_fps, pipeline
    from emotion.recognizer import EmotionRecognizer

    video = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
    frames = read_frames(video)
    rates, meshes = [], []
    with tempfile.TemporaryDirectory() as tmp, EmotionRecognizer() as rec:
        for _ in range(repeats):
            meshes.append(mesh_fps(frames))
            rates.append(pipeline(rec, video, Path(tmp), video=False)[0])
    rate, mesh = float(np.median(rates)), float(np.median(meshes))
    return {"json_fps": rate, "mesh_fps": mesh, "share": rate / mesh}


def run(repeats: int) -> dict:
    from emotion.face import FaceConfig
    from emotion.recognizer import EmotionRecognizer
    from emotion.runtime import set_threads

    set_threads(1)
    out: dict = {}
    with EmotionRecognizer() as rec:
        out["zidane"] = zidane_case(rec)
        print("zidane", out["zidane"], flush=True)
        out["noface_video"] = noface_case(rec)
        print("face_noface.mov", out["noface_video"], flush=True)
    counts = still_counts(photo_paths(), FaceConfig())
    out["faces_dir"] = {"photos": len(counts), "without_face": sum(n == 0 for n in counts),
                        "several_faces": sum(n > 1 for n in counts)}
    print("faces/", out["faces_dir"], flush=True)
    groups = still_counts([SHARED / "images" / n for n in ("group.jpeg", "multi_face.jpg")], FaceConfig())
    out["groups"] = {"group.jpeg": groups[0], "multi_face.jpg": groups[1]}
    print("groups", out["groups"], flush=True)
    out["nonface_images"] = {"images": 40, "false_faces": sum(still_counts(nonface_images(), FaceConfig()))}
    print("non-face images", out["nonface_images"], flush=True)
    out["crowd"] = crowd_case(FaceConfig(max_faces=20))
    print("crowd", out["crowd"], flush=True)
    out["speed"] = speed_case(repeats)
    print("speed", out["speed"], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs of the speed figure (median)")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS.relative_to(ROOT)})")
    args = p.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    if not SHARED.is_dir():
        raise SystemExit(f"the recall benchmark needs the shared test data at {SHARED}")
    results = run(args.repeats)
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
