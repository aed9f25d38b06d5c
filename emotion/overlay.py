"""OpenCV drawing of results: face boxes and labels, a panel per face with category bars and a valence-arousal
circle, and a status line with FPS and per-stage latency. Sizes scale with the frame so 640x480 and 1080p read alike,
and panels are placed beside their face without covering faces or each other (smaller when the frame is crowded).
On request (`OverlayConfig.show`) the face signals too: the top blendshapes as bars in the panel, never on a face, and
thin lines on it: the head's axes from the nose and a gaze arrow from each iris."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emotion.configargs import ConfigError, option
from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.results import FaceResult, FrameResult
from emotion.signals import BLENDSHAPE_NAMES, FaceSignals, head_rotation

COLORS: dict[str, tuple[int, int, int]] = {  # BGR
    "angry": (40, 40, 230),
    "disgust": (40, 160, 60),
    "fear": (190, 80, 190),
    "happy": (40, 200, 250),
    "neutral": (200, 200, 200),
    "sad": (220, 140, 50),
    "surprise": (60, 170, 255),
}
OBJECT_COLOR = (255, 160, 0)  # BGR of object-detector boxes
FONT = cv2.FONT_HERSHEY_SIMPLEX

PANEL_W, HEADER_H, ROW_H, PAD = 222, 66, 15, 6  # panel geometry in px at scale 1
PANEL_H = HEADER_H + len(LABELS) * ROW_H + PAD
MIN_PANEL_SCALE = 0.6  # panels never get smaller than this (text stays legible)
PANEL_AREA = 0.3  # panels together cover at most this fraction of the frame

SHOW = ("blendshapes", "pose", "gaze")
"""The face signals the overlay can draw (`--show`)."""
BLEND_ROWS = 5  # blendshape bars added to the panel by --show blendshapes, the highest scores first
BLEND_BAR_X = 136  # px at scale 1 from the panel's left edge to the blendshape bars (the names are long)
BLEND_COLOR = (210, 170, 80)  # BGR
AXIS_COLORS = ((60, 60, 235), (60, 200, 60), (235, 120, 40))  # BGR of the head's x, y and z axes (red, green, blue)
GAZE_COLOR = (255, 255, 0)  # BGR, cyan
NOSE_TIP = 1  # face-mesh landmark where the head-pose axes start
AXIS_LENGTH, GAZE_LENGTH = 0.35, 0.5  # of the face box's longer side: the head's axes and a gaze straight to the side


@dataclass(frozen=True)
class OverlayConfig:
    """What to draw on each frame."""

    panel: bool = True  # per-face panel with probability bars and the valence-arousal circle
    landmarks: bool = False  # draw the face mesh points
    help_text: str | None = None  # a line of key help at the bottom, None for none
    show: tuple[str, ...] = option(  # face signals to draw, of SHOW (the face stage must compute them)
        "also draw face signals, any of blendshapes (the 5 highest blendshape scores as bars in each face's panel), "
        "pose (the head's axes from the nose tip: red to the person's left, green up, blue forward) and gaze (an "
        "arrow from each iris where the eyes look); comma-separated or repeated, e.g. --show pose,gaze; needs the "
        "face signals",
        (),
        metavar="WHAT",
        choices=SHOW,
        default_text="none",
    )

    def __post_init__(self) -> None:
        unknown = [name for name in self.show if name not in SHOW]
        if unknown:
            raise ConfigError(f"{{}} takes {', '.join(SHOW)}, not {', '.join(unknown)}", "show")


def check_signals(config: OverlayConfig, signals: bool) -> None:
    """Refuse to draw face signals (`config.show`) that the face stage does not compute (`signals` False)."""
    if config.show and not signals:
        raise EmotionError(
            f"show={config.show!r} needs the face signals, which are off",
            fix="pass face_config=FaceConfig(signals=True) to the recognizer",
        )


@dataclass(frozen=True)
class PanelPlace:
    """Where one face's panel goes: top-left corner and size in px, and the drawing scale inside it."""

    track_id: int
    x: int  # px
    y: int  # px
    w: int  # px
    h: int  # px
    scale: float  # 1.0 = PANEL_W x PANEL_H px

    def bar(self, i: int) -> tuple[int, int, int, int]:
        """The full-length rectangle (x, y, w, h) of the probability bar of LABELS[i]."""
        s = self.scale
        y = self.y + int((HEADER_H + i * ROW_H + 3) * s)
        x = self.x + int(66 * s)
        return x, y, int((PANEL_W - 66 - 46) * s), max(3, int(9 * s))

    def blend_bar(self, row: int) -> tuple[int, int, int, int]:
        """The full-length rectangle (x, y, w, h) of the blendshape bar in `row` (0 the highest score)."""
        s = self.scale
        y = self.y + int((PANEL_H + row * ROW_H + 3) * s)
        return self.x + int(BLEND_BAR_X * s), y, int((PANEL_W - BLEND_BAR_X - 40) * s), max(3, int(9 * s))


def _scale_of(shape) -> float:
    """Drawing scale for a frame of this shape: 1 at 540 px on the short side."""
    return float(np.clip(min(shape[:2]) / 540.0, 0.75, 2.5))


def _scale(frame: np.ndarray) -> float:
    return _scale_of(frame.shape)


def _text(img, text, org, scale, color=(255, 255, 255), thickness=1) -> None:
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def _plain(img, text, org, scale, color=(255, 255, 255), thickness=1) -> None:
    """Text without an outline, for the darkened panel where an outline adds nothing but a second rasterisation."""
    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def _banner(img, text, org, scale, color, thickness=1) -> None:
    """Text on a translucent dark strip, for the status and help lines that cross busy backgrounds."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(2, int(th * 0.35))
    x0, y0 = max(org[0] - pad, 0), max(org[1] - th - pad, 0)
    x1, y1 = min(org[0] + tw + pad, img.shape[1]), min(org[1] + base + pad, img.shape[0])
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi * 0.45).astype(np.uint8)
    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def _overlap(a, b) -> int:
    """Intersection area of two (x, y, w, h) rectangles."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _label_rect(box, s: float) -> tuple[int, int, int, int]:
    """The face box grown upwards by the height of its label line."""
    x, y, w, h = box
    lh = int(22 * s)
    return x, y - lh, max(w, int(150 * s)), h + lh


def _candidates(box, pw: int, ph: int, W: int, H: int, gap: int) -> list[tuple[int, int]]:
    """Top-left corners beside (right, left), below and above a face box, slid along that side, inside the frame."""
    x, y, w, h = box
    ys = sorted({y, y + h - ph, y + (h - ph) // 2, *range(0, max(H - ph, 0) + 1, max(ph // 4, 1))})
    xs = sorted({x, x + w - pw, x + (w - pw) // 2, *range(0, max(W - pw, 0) + 1, max(pw // 4, 1))})
    out = [(x + w + gap, py) for py in ys] + [(x - gap - pw, py) for py in ys]
    out += [(px, y + h + gap) for px in xs] + [(px, y - int(24 * gap / 6) - ph) for px in xs]
    xmax, ymax = max(W - pw, 0), max(H - ph, 0)
    return [(int(min(max(px, 0), xmax)), int(min(max(py, 0), ymax))) for px, py in out]


def panel_height(config: OverlayConfig) -> int:
    """A panel's height in px at scale 1: PANEL_H, plus the blendshape rows when the overlay shows them."""
    return PANEL_H + (BLEND_ROWS * ROW_H + PAD if "blendshapes" in config.show else 0)


def _place(faces, scale: float, frame_shape, reserved, height: int, on_faces: bool) -> tuple[list[PanelPlace], int]:
    """Greedy placement at one scale: each panel takes the free spot nearest its face; returns the clashes: panels
    overlapping an earlier panel, and with `on_faces` panels covering a face too."""
    H, W = frame_shape[:2]
    pw, ph = int(PANEL_W * scale), int(height * scale)
    gap = max(4, int(6 * scale))
    boxes = [_label_rect(f.box, _scale_of(frame_shape)) for f in faces]
    placed: list[PanelPlace] = []
    clashes = 0
    for face in faces:
        x, y, w, h = face.box
        cx, cy = x + w / 2, y + h / 2
        best, best_cost = None, None
        for px, py in _candidates(face.box, pw, ph, W, H, gap):
            rect = (px, py, pw, ph)
            panels = sum(_overlap(rect, (p.x, p.y, p.w, p.h)) for p in placed)
            covered = sum(_overlap(rect, b) for b in boxes) + sum(_overlap(rect, r) for r in reserved)
            dist = abs(px + pw / 2 - cx) - (w + pw) / 2, abs(py + ph / 2 - cy) - (h + ph) / 2
            cost = 8 * panels + 2 * covered + max(dist[0], 0) + max(dist[1], 0)
            if best_cost is None or cost < best_cost:
                best, best_cost = rect, cost
        if any(_overlap(best, (p.x, p.y, p.w, p.h)) for p in placed):
            clashes += 1
        elif on_faces and any(_overlap(best, f.box) for f in faces):
            clashes += 1
        placed.append(PanelPlace(face.track_id, best[0], best[1], pw, ph, scale))
    return placed, clashes


def panel_layout(frame_shape, result: FrameResult, config: OverlayConfig = OverlayConfig()) -> list[PanelPlace]:
    """Panel places for the faces of `result` (sorted by track id), shrunk as needed so that they do not overlap, nor,
    when the blendshape bars make them taller, cover a face (panels without them keep the placement they always had)."""
    faces = sorted(result.faces, key=lambda f: f.track_id)
    if not faces:
        return []
    H, W = frame_shape[:2]
    s = _scale_of(frame_shape)
    reserved = [(0, 0, W, int(32 * s)), (0, H - int(26 * s), W, int(26 * s))]  # status and help lines
    height = panel_height(config)
    fit = np.sqrt(PANEL_AREA * W * H / (len(faces) * PANEL_W * height))
    scale = float(max(min(s, fit), MIN_PANEL_SCALE))
    best = None
    while True:
        places, clashes = _place(faces, scale, frame_shape, reserved, height, height > PANEL_H)
        if best is None or clashes < best[1]:
            best = (places, clashes)
        if clashes == 0 or scale <= MIN_PANEL_SCALE:
            return best[0]
        scale = max(scale * 0.85, MIN_PANEL_SCALE)


def _draw_panel(img: np.ndarray, face: FaceResult, p: PanelPlace) -> None:
    s = p.scale
    color = COLORS[face.emotion]
    roi = img[p.y : p.y + p.h, p.x : p.x + p.w]
    roi[:] = (roi * 0.3).astype(np.uint8)
    cv2.rectangle(img, (p.x, p.y), (p.x + max(2, int(3 * s)) - 1, p.y + p.h - 1), color, -1)
    tx = p.x + int((PAD + 4) * s)
    _plain(img, f"#{face.track_id} {face.emotion} {face.confidence:.0%}", (tx, p.y + int(20 * s)), 0.5 * s, color,
          max(1, int(s)))
    _plain(img, f"valence {face.valence:+.2f}", (tx, p.y + int(39 * s)), 0.4 * s)
    _plain(img, f"arousal {face.arousal:+.2f}", (tx, p.y + int(56 * s)), 0.4 * s)
    r = int(25 * s)
    cx, cy = p.x + p.w - int(PAD * s) - r - 2, p.y + int(8 * s) + r
    cv2.circle(img, (cx, cy), r, (40, 40, 40), -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, (170, 170, 170), 1, cv2.LINE_AA)
    cv2.line(img, (cx - r, cy), (cx + r, cy), (110, 110, 110), 1)
    cv2.line(img, (cx, cy - r), (cx, cy + r), (110, 110, 110), 1)
    dot = (int(cx + np.clip(face.valence, -1, 1) * r), int(cy - np.clip(face.arousal, -1, 1) * r))
    cv2.circle(img, dot, max(3, int(4 * s)), color, -1, cv2.LINE_AA)
    cv2.circle(img, dot, max(3, int(4 * s)), (0, 0, 0), 1, cv2.LINE_AA)
    for i, name in enumerate(LABELS):
        bx, by, bw, bh = p.bar(i)
        prob = float(face.probabilities[i])
        _plain(img, name, (tx, by + bh), 0.38 * s, (235, 235, 235))
        cv2.rectangle(img, (bx, by), (bx + bw, by + bh), (70, 70, 70), -1)
        if prob > 0.005:
            cv2.rectangle(img, (bx, by), (bx + max(1, int(bw * prob)), by + bh), COLORS[name], -1)
        _plain(img, f"{prob:.0%}", (bx + bw + int(4 * s), by + bh), 0.36 * s, (235, 235, 235))


def _draw_blendshapes(img: np.ndarray, signals: FaceSignals, p: PanelPlace) -> None:
    """The BLEND_ROWS highest blendshape scores as bars under the category bars of a panel (`_neutral`, the network's
    resting score, left out: it is no expression)."""
    s = p.scale
    order = [i for i in np.argsort(-signals.blendshapes, kind="stable") if BLENDSHAPE_NAMES[i] != "_neutral"]
    tx = p.x + int((PAD + 4) * s)
    line_y = p.y + int((PANEL_H - PAD / 2) * s)
    cv2.line(img, (tx, line_y), (p.x + p.w - int(PAD * s), line_y), (110, 110, 110), 1)
    for row, i in enumerate(order[:BLEND_ROWS]):
        bx, by, bw, bh = p.blend_bar(row)
        score = float(np.clip(signals.blendshapes[i], 0.0, 1.0)) if np.isfinite(signals.blendshapes[i]) else 0.0
        _plain(img, BLENDSHAPE_NAMES[i], (tx, by + bh), 0.34 * s, (235, 235, 235))
        cv2.rectangle(img, (bx, by), (bx + bw, by + bh), (70, 70, 70), -1)
        if score > 0.005:
            cv2.rectangle(img, (bx, by), (bx + max(1, int(bw * score)), by + bh), BLEND_COLOR, -1)
        _plain(img, f"{score:.0%}", (bx + bw + int(4 * s), by + bh), 0.36 * s, (235, 235, 235))


def gaze_direction(signals: FaceSignals) -> np.ndarray:
    """The unit vector the eyes look along, in the camera's view: the eye-in-head direction (x and y in the head's
    frame the sines of the gaze's yaw and pitch, as emotion.signals.eye_angles measures them) turned by the head."""
    sx, sy = np.sin(np.radians(signals.gaze.astype(np.float64)))
    in_head = np.array([sx, sy, np.sqrt(max(1.0 - sx * sx - sy * sy, 0.0))])
    return head_rotation(*signals.head_pose) @ in_head


def _to_image(origin, vector: np.ndarray, length: float) -> tuple[int, int]:
    """The image point `length` px along a camera-view vector's projection from `origin` (image y points down)."""
    return int(round(origin[0] + length * vector[0])), int(round(origin[1] - length * vector[1]))


def _draw_signals(img: np.ndarray, face: FaceResult, s: float, show: tuple[str, ...]) -> None:
    """The head's axes at the nose tip (farthest axis first) and an arrow from each iris along the gaze, lengths in
    proportion to the face box; projected orthographically, so an axis or gaze towards the camera is short."""
    signals = face.signals
    if signals is None or not (np.isfinite(signals.head_pose).all() and np.isfinite(signals.gaze).all()):
        return
    size = max(face.box[2], face.box[3])
    thick = max(1, int(round(1.5 * s)))
    if "pose" in show and face.landmarks is not None:
        nose = face.landmarks[NOSE_TIP, :2]
        axes = head_rotation(*signals.head_pose)
        for k in np.argsort(axes[2]):
            end = _to_image(nose, axes[:, k], AXIS_LENGTH * size)
            cv2.line(img, _to_image(nose, axes[:, k], 0.0), end, AXIS_COLORS[k], thick, cv2.LINE_AA)
    if "gaze" in show:
        direction = gaze_direction(signals)
        for iris in signals.irises:
            start = _to_image(iris, direction, 0.0)
            cv2.circle(img, start, max(2, int(2 * s)), GAZE_COLOR, 1, cv2.LINE_AA)
            cv2.arrowedLine(img, start, _to_image(iris, direction, GAZE_LENGTH * size), GAZE_COLOR, thick,
                            cv2.LINE_AA, tipLength=0.25)  # fmt: skip


def _leader(img: np.ndarray, box, p: PanelPlace, color, s: float) -> None:
    """A thin line from a panel to its face when the panel is not right beside it."""
    x, y, w, h = box
    fx, fy = float(np.clip(p.x + p.w / 2, x, x + w)), float(np.clip(p.y + p.h / 2, y, y + h))
    qx, qy = float(np.clip(fx, p.x, p.x + p.w)), float(np.clip(fy, p.y, p.y + p.h))
    if np.hypot(fx - qx, fy - qy) > 12 * s:
        cv2.line(img, (int(fx), int(fy)), (int(qx), int(qy)), color, 1, cv2.LINE_AA)


def _label_origin(img_shape, box, text_size, s: float, panels: list[PanelPlace]) -> tuple[int, int]:
    """Baseline origin of a face's label: above the box, else below it, else inside its top, avoiding panels."""
    H = img_shape[0]
    x, y, w, h = box
    tw, th = text_size
    top, bottom = int(32 * s), H - int(26 * s)  # keep clear of the status and help lines
    options = [(x, y - int(7 * s)), (x, y + h + th + int(7 * s)), (x + int(4 * s), y + th + int(6 * s))]
    fits = [o for o in options[:2] if o[1] - th >= top and o[1] <= bottom] + [options[2]]
    for ox, oy in fits:
        rect = (ox, oy - th - 2, tw, th + 4)
        if not any(_overlap(rect, (p.x, p.y, p.w, p.h)) for p in panels):
            return ox, oy
    return fits[0]


def draw_face(img: np.ndarray, face: FaceResult, s: float, config: OverlayConfig, panels=()) -> None:
    """Box, the signals `config.show` asks for, then the label '#id emotion confidence' above the box (or below or
    inside, away from the given panels)."""
    x, y, w, h = face.box
    color = COLORS[face.emotion]
    cv2.rectangle(img, (x, y), (x + w, y + h), color, max(1, int(round(2 * s))), cv2.LINE_AA)
    if config.landmarks and face.landmarks is not None:
        for px, py in face.landmarks[:, :2].astype(int)[::3]:
            cv2.circle(img, (int(px), int(py)), 1, (0, 255, 0), -1)
    if config.show:
        _draw_signals(img, face, s, config.show)
    label = f"#{face.track_id} {face.emotion} {face.confidence:.0%}"
    thick = max(1, int(s))
    size = cv2.getTextSize(label, FONT, 0.55 * s, thick)[0]
    _text(img, label, _label_origin(img.shape, face.box, size, s, list(panels)), 0.55 * s, color, thick)


def draw_text_line(img: np.ndarray, text: str, row: int, color=(255, 255, 255)) -> np.ndarray:
    """A line of text on a dark strip: row 0 is the status line at the top, 1, 2, ... below it, -1 the bottom line."""
    s = _scale(img)
    if row >= 0:
        y, size, thick = int((22 + 22 * row) * s), (0.5 if row == 0 else 0.45) * s, max(1, int(s)) if row == 0 else 1
    else:
        y, size, thick = img.shape[0] - int((9 + 22 * (-row - 1)) * s), 0.45 * s, 1
    _banner(img, text, (int(8 * s), y), size, color, thick)
    return img


def draw_frame(
    img: np.ndarray,
    result: FrameResult,
    config: OverlayConfig = OverlayConfig(),
    status: str | None = None,
) -> np.ndarray:
    """Draw every face of `result` on `img` in place (and a status line such as FPS and latency); returns `img`."""
    s = _scale(img)
    faces = sorted(result.faces, key=lambda f: f.track_id)
    places = {p.track_id: p for p in panel_layout(img.shape, result, config)} if config.panel else {}
    for face in faces:
        if face.track_id in places:
            _leader(img, face.box, places[face.track_id], COLORS[face.emotion], s)
            _draw_panel(img, face, places[face.track_id])
            if "blendshapes" in config.show and face.signals is not None:
                _draw_blendshapes(img, face.signals, places[face.track_id])
    for face in faces:
        draw_face(img, face, s, config, places.values())
    if status:
        draw_text_line(img, status, 0, (0, 255, 255))
    if config.help_text:
        draw_text_line(img, config.help_text, -1)
    return img


def draw_boxes(img: np.ndarray, boxes, names: dict[int, str]) -> np.ndarray:
    """Draw object detections given as rows of (x1, y1, x2, y2, confidence, class id)."""
    s = _scale(img)
    for x1, y1, x2, y2, conf, cls in boxes:
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(img, p1, p2, OBJECT_COLOR, max(1, int(s)), cv2.LINE_AA)
        name = names.get(int(cls), str(int(cls)))
        _text(img, f"{name} {conf:.2f}", (p1[0] + int(3 * s), p1[1] + int(16 * s)), 0.45 * s, OBJECT_COLOR)
    return img
