"""Face signals (README "Face signals"): `python -m benchmarks.signals` prints the figures of its tables and writes
benchmarks/signals.json.

- Agreement with MediaPipe's own Face Landmarker (Tasks API, the shipped bundle, its own detector and landmark model)
  on the shared photos: blendshape scores and head pose (its facial transformation matrix, decomposed as ours).
- Mirror consistency: yaw, roll and gaze yaw change sign on the mirrored photo.
- Gaze on the photos (most people look into the camera).
- Cost: the face stage's time per face with signals on and off, and the `--video` JSON-only rate with and without
  them against the face mesh alone, on the Wolfgang clip.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.support import ROOT, SHARED, read_frames

RESULTS = ROOT / "benchmarks" / "signals.json"


def photos() -> list[Path]:
    folders = (SHARED / "faces", SHARED / "images")
    return sorted(p for f in folders for p in f.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def tasks_landmarker():
    """MediaPipe's Face Landmarker on the shipped bundle, with blendshapes and transformation matrices."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from emotion.signals import BUNDLE
    from emotion.weights import path

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path(BUNDLE))),
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
        num_faces=10,
    )
    return mp, vision.FaceLandmarker.create_from_options(options)


def reference_faces(mp, landmarker, rgb: np.ndarray) -> list[dict]:
    """Face Landmarker's faces: nose tip px, blendshapes, (yaw, pitch, roll) from its matrix."""
    from emotion.signals import euler

    h, w = rgb.shape[:2]
    found = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
    return [
        {
            "nose": np.array([points[1].x * w, points[1].y * h]),
            "width": (max(p.x for p in points) - min(p.x for p in points)) * w,
            "blendshapes": np.array([c.score for c in scores], np.float32),
            "pose": euler(np.asarray(matrix)[:3, :3]),
        }
        for points, scores, matrix in zip(
            found.face_landmarks, found.face_blendshapes, found.facial_transformation_matrixes
        )
    ]


def agreement() -> dict:
    """Our signals against Face Landmarker's on every shared photo (faces matched by nose tip), and mirrored."""
    from emotion.face import FaceAnalyzer
    from emotion.io.files import read_image
    from emotion.signals import BLENDSHAPE_NAMES

    mp, landmarker = tasks_landmarker()
    blend, pose, gaze, mirror = [], [], [], []
    with FaceAnalyzer(static=True) as analyzer:
        for path in photos():
            image = read_image(path)
            faces = [f for f in analyzer(image) if f.signals is not None]
            refs = reference_faces(mp, landmarker, image[:, :, ::-1])
            for face in faces:
                nose = face.landmarks[1, :2]
                ref = min(refs, key=lambda r: np.linalg.norm(r["nose"] - nose), default=None)
                if ref is not None and np.linalg.norm(ref["nose"] - nose) < 0.1 * ref["width"]:
                    blend.append(np.abs(face.signals.blendshapes - ref["blendshapes"]))
                    pose.append(face.signals.head_pose - ref["pose"])
                gaze.append(face.signals.gaze)
            if len(faces) == 1:
                mirrored = [f for f in analyzer(np.ascontiguousarray(image[:, ::-1])) if f.signals is not None]
                if len(mirrored) == 1:
                    a, b = faces[0].signals, mirrored[0].signals
                    mirror.append(np.r_[a.head_pose, a.gaze, b.head_pose, b.gaze])
    landmarker.close()
    blend, pose, gaze, mirror = map(np.array, (blend, pose, gaze, mirror))
    per_name = blend.mean(axis=0)
    worst = np.argsort(per_name)[::-1][:5]

    def flips(i: int, threshold: float) -> float:
        """Share of mirrored pairs, among those with |angle| over threshold, whose angle changes sign."""
        big = np.abs(mirror[:, i]) > threshold
        return float(np.mean(np.sign(mirror[big, i]) != np.sign(mirror[big, i + 5]))) if big.any() else float("nan")

    return {
        "faces_matched": len(blend),
        "blendshape_mae": float(blend.mean()),
        "blendshape_mae_worst": {BLENDSHAPE_NAMES[i]: float(per_name[i]) for i in worst},
        "pose_mae_deg": dict(zip(("yaw", "pitch", "roll"), np.abs(pose).mean(axis=0).round(2).tolist())),
        "pose_median_diff_deg": dict(zip(("yaw", "pitch", "roll"), np.median(pose, axis=0).round(2).tolist())),
        "gaze_median_deg": dict(zip(("yaw", "pitch"), np.median(gaze, axis=0).round(2).tolist())),
        "gaze_abs_median_deg": dict(zip(("yaw", "pitch"), np.median(np.abs(gaze), axis=0).round(2).tolist())),
        "mirror_pairs": len(mirror),
        "mirror_sign_flips_over_5deg": {"head_yaw": flips(0, 5), "head_roll": flips(2, 5), "gaze_yaw": flips(3, 5)},
        "mirror_pitch_mae_deg": float(np.abs(mirror[:, 1] - mirror[:, 6]).mean()),
    }


def face_stage_ms(frames: list[np.ndarray], signals: bool, repeats: int) -> float:
    """Median over repeats of the face stage's mean ms per face in video mode, signals read on the same thread."""
    from emotion.face import FaceAnalyzer, FaceConfig

    runs = []
    with FaceAnalyzer(FaceConfig(signals=signals)) as analyzer:
        for _ in range(repeats):
            analyzer.reset()
            faces, start = 0, time.perf_counter()
            for frame in frames:
                found = analyzer(frame)
                faces += sum(f.signals is not None or not signals for f in found)
            runs.append((time.perf_counter() - start) * 1000 / max(faces, 1))
    return float(np.median(runs))


def cost(repeats: int) -> dict:
    from benchmarks.run import mesh_fps, pipeline
    from emotion.face import FaceConfig
    from emotion.recognizer import EmotionRecognizer

    video = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
    frames = read_frames(video)
    out = {
        "face_stage_ms_per_face": {
            "signals_off": face_stage_ms(frames, False, repeats),
            "signals_on": face_stage_ms(frames, True, repeats),
        }
    }
    rates: dict[str, list[float]] = {"mesh": [], "signals_off": [], "signals_on": []}
    with tempfile.TemporaryDirectory() as tmp:
        recognizers = {
            k: EmotionRecognizer(face_config=FaceConfig(signals=k == "signals_on")) for k in rates if k != "mesh"
        }
        for _ in range(repeats):
            rates["mesh"].append(mesh_fps(frames))
            for name, rec in recognizers.items():
                rates[name].append(pipeline(rec, video, Path(tmp), video=False)[0])
        for rec in recognizers.values():
            rec.close()
    fps = {k: float(np.median(v)) for k, v in rates.items()}
    out["json_fps"] = fps
    out["json_share_of_mesh"] = {k: fps[k] / fps["mesh"] for k in ("signals_off", "signals_on")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs of each speed figure (median)")
    p.add_argument("--skip-agreement", action="store_true", help="only the cost figures")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS.relative_to(ROOT)})")
    args = p.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    if not SHARED.is_dir():
        raise SystemExit(f"the signals benchmark needs the shared test data at {SHARED}")
    from emotion.runtime import set_threads

    set_threads(1)
    results = {}
    if not args.skip_agreement:
        results["agreement"] = agreement()
        print("agreement", json.dumps(results["agreement"], indent=1), flush=True)
    results["cost"] = cost(args.repeats)
    print("cost", json.dumps(results["cost"], indent=1), flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
