"""OpenCV drawing of results: face boxes and labels, a panel per face with category bars and a valence-arousal
circle, and a status line with FPS and per-stage latency. Sizes scale with the frame so 640x480 and 1080p read alike."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emotion.labels import LABELS
from emotion.results import FaceResult, FrameResult

COLORS: dict[str, tuple[int, int, int]] = {  # BGR
    "angry": (40, 40, 230),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (40, 200, 250),
    "neutral": (200, 200, 200),
    "sad": (200, 120, 40),
    "surprise": (60, 170, 255),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class OverlayConfig:
    """What to draw on each frame."""

    panel: bool = True  # per-face panel with probability bars and the valence-arousal circle
    landmarks: bool = False  # draw the face mesh points
    help_text: str | None = None  # a line of key help at the bottom, None for none


def _scale(frame: np.ndarray) -> float:
    return float(np.clip(min(frame.shape[:2]) / 540.0, 0.6, 2.5))


def _text(img, text, org, scale, color=(255, 255, 255), thickness=1) -> None:
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def _panel_size(s: float) -> tuple[int, int]:
    return int(190 * s), int(len(LABELS) * 16 * s + 110 * s)


def _place_panel(box, size, frame_shape, taken: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Top-left corner for a face's panel: beside the face if there is room, moved down past earlier panels."""
    x, y, w, h = box
    pw, ph = size
    H, W = frame_shape[:2]
    px = x + w + 8 if x + w + 8 + pw <= W else max(0, x - 8 - pw)
    py = int(np.clip(y, 0, max(0, H - ph)))
    for _ in range(len(taken) + 1):
        clash = [t for t in taken if px < t[0] + t[2] and t[0] < px + pw and py < t[1] + t[3] and t[1] < py + ph]
        if not clash:
            break
        py = max(t[1] + t[3] for t in clash) + 4
    py = min(py, max(0, H - ph))
    taken.append((px, py, pw, ph))
    return px, py


def draw_face(img: np.ndarray, face: FaceResult, s: float, config: OverlayConfig, taken: list) -> None:
    """Box, id and label above it; optionally the panel with bars and the valence-arousal circle."""
    x, y, w, h = face.box
    color = COLORS[face.emotion]
    t = max(1, int(round(2 * s)))
    cv2.rectangle(img, (x, y), (x + w, y + h), color, t, cv2.LINE_AA)
    label = f"#{face.track_id} {face.emotion} {face.confidence:.0%}"
    ty = y - int(6 * s) if y - 20 * s > 0 else y + h + int(18 * s)
    _text(img, label, (x, ty), 0.55 * s, color, max(1, int(s)))
    if config.landmarks and face.landmarks is not None:
        for px, py in face.landmarks[:, :2].astype(int)[::3]:
            cv2.circle(img, (int(px), int(py)), 1, (0, 255, 0), -1)
    if not config.panel:
        return
    pw, ph = _panel_size(s)
    px, py = _place_panel(face.box, (pw, ph), img.shape, taken)
    roi = img[py : py + ph, px : px + pw]
    roi[:] = (roi * 0.35).astype(np.uint8)
    _text(img, f"#{face.track_id}  V {face.valence:+.2f}  A {face.arousal:+.2f}", (px + int(6 * s), py + int(16 * s)), 0.42 * s)
    bar_x = px + int(62 * s)
    bar_w = pw - int(70 * s)
    for i, name in enumerate(LABELS):
        by = py + int((26 + i * 16) * s)
        p = float(face.probabilities[i])
        _text(img, name, (px + int(6 * s), by + int(10 * s)), 0.36 * s)
        cv2.rectangle(img, (bar_x, by + int(2 * s)), (bar_x + bar_w, by + int(12 * s)), (80, 80, 80), 1)
        cv2.rectangle(img, (bar_x, by + int(2 * s)), (bar_x + int(bar_w * p), by + int(12 * s)), COLORS[name], -1)
    r = int(38 * s)
    cx, cy = px + pw // 2, py + ph - r - int(8 * s)
    cv2.circle(img, (cx, cy), r, (180, 180, 180), 1, cv2.LINE_AA)
    cv2.line(img, (cx - r, cy), (cx + r, cy), (120, 120, 120), 1)
    cv2.line(img, (cx, cy - r), (cx, cy + r), (120, 120, 120), 1)
    _text(img, "V", (cx + r + 2, cy + 4), 0.3 * s, (180, 180, 180))
    _text(img, "A", (cx - 4, cy - r - 3), 0.3 * s, (180, 180, 180))
    dot = (int(cx + face.valence * r), int(cy - face.arousal * r))
    cv2.circle(img, dot, max(3, int(4 * s)), color, -1, cv2.LINE_AA)


def draw_frame(
    img: np.ndarray,
    result: FrameResult,
    config: OverlayConfig = OverlayConfig(),
    status: str | None = None,
) -> np.ndarray:
    """Draw every face of `result` on `img` in place (and a status line such as FPS and latency); returns `img`."""
    s = _scale(img)
    taken: list[tuple[int, int, int, int]] = []
    for face in sorted(result.faces, key=lambda f: f.track_id):
        draw_face(img, face, s, config, taken)
    if status:
        _text(img, status, (int(8 * s), int(22 * s)), 0.5 * s, (0, 255, 255), max(1, int(s)))
    if config.help_text:
        _text(img, config.help_text, (int(8 * s), img.shape[0] - int(10 * s)), 0.45 * s, (255, 255, 255))
    return img


def draw_boxes(img: np.ndarray, boxes, names: dict[int, str]) -> np.ndarray:
    """Draw object detections given as rows of (x1, y1, x2, y2, confidence, class id)."""
    s = _scale(img)
    for x1, y1, x2, y2, conf, cls in boxes:
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, (255, 160, 0), max(1, int(s)), cv2.LINE_AA)
        _text(img, f"{names.get(int(cls), int(cls))} {conf:.2f}", (p1[0], max(12, p1[1] - 4)), 0.45 * s, (255, 160, 0))
    return img
