"""The real-time mode: a real window under Xvfb driven with xdotool, the headless loop, the one-frame capture buffer,
stream reconnection and a missing camera; real MediaPipe and model on the shared clips."""

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from support import ROOT, SHARED, needs_shared, probe_video, start_xvfb, xdotool

from emotion.labels import LABELS
from emotion.overlay import (
    AXIS_COLORS, AXIS_LENGTH, BLEND_COLOR, COLORS, GAZE_LENGTH, NOSE_TIP, OverlayConfig, _scale_of, draw_frame,
    draw_text_line, gaze_direction, panel_layout,
)
from emotion.io.sources import Captured, FrameBuffer, open_source
from emotion.results import FaceResult, FrameResult
from emotion.signals import head_rotation

WOLFGANG = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
SINGLE = SHARED / "videos" / "single_face.mp4"


def start_cli(*args, cwd: Path, display: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    if display:
        env["DISPLAY"] = display
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll `predicate` until it returns something truthy; fail with `what` (and the app's stderr) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the app exited ({proc.returncode}) while waiting for {what}: {proc.stderr.read()}")
        time.sleep(0.2)
    if proc is not None:
        proc.kill()
        pytest.fail(f"timed out waiting for {what}: {proc.communicate()[1]}")
    pytest.fail(f"timed out waiting for {what}")


def json_frames(path: Path) -> list:
    """The frames of a results JSON being written (empty while it does not exist yet)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


@pytest.fixture(scope="module")
def xdisplay():
    """A private Xvfb display; skips when Xvfb or xdotool is not installed (CI installs both)."""
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("Xvfb and xdotool are needed for the window tests (apt-get install xvfb xdotool)")
    server, display = start_xvfb()
    yield display
    server.terminate()
    server.wait(timeout=10)


def find_window(display: str, proc: subprocess.Popen) -> str:
    ids = wait_for(lambda: xdotool(display, "search", "--name", "^emotion$"), 90, "the window", proc)
    return ids.split()[-1]


def close_window(display: str, window: str) -> None:
    """Ask the window to close as a window manager's close button does (a WM_DELETE_WINDOW client message)."""

    class ClientMessage(ctypes.Structure):
        _fields_ = [
            ("type", ctypes.c_int),
            ("serial", ctypes.c_ulong),
            ("send_event", ctypes.c_int),
            ("display", ctypes.c_void_p),
            ("window", ctypes.c_ulong),
            ("message_type", ctypes.c_ulong),
            ("format", ctypes.c_int),
            ("data", ctypes.c_long * 5),
            ("pad", ctypes.c_long * 12),
        ]

    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open X display {display}"
    event = ClientMessage(type=33, window=int(window), format=32)  # 33 = ClientMessage
    event.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
    event.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
    x11.XSendEvent(dpy, int(window), 0, 0, ctypes.byref(event))
    x11.XFlush(dpy)
    x11.XCloseDisplay(dpy)


def result_from_json(record: dict) -> FrameResult:
    faces = []
    for f in record["faces"]:
        probs = np.array([f["probabilities"][name] for name in LABELS])
        faces.append(FaceResult(f["id"], tuple(f["box"]), probs, f["valence"], f["arousal"], probs, 0.0, 0.0))
    return FrameResult(record["frame"], record["time"], faces)


def color_share(img: np.ndarray, rect, color, tol: int = 40) -> float:
    """Fraction of the pixels in rect (x, y, w, h) within `tol` of a BGR colour."""
    x, y, w, h = rect
    roi = img[max(y, 0) : y + h, max(x, 0) : x + w].astype(int)
    return float((np.abs(roi - np.array(color)).max(axis=2) <= tol).mean()) if roi.size else 0.0


@needs_shared
def test_window_screenshot_shows_the_overlay_and_q_quits(xdisplay, tmp_path):
    proc = start_cli(
        "--realtime", "--source", WOLFGANG, "--save-dir", tmp_path / "shots", "--output", tmp_path / "session.mp4",
        cwd=tmp_path, display=xdisplay,
    )
    window = find_window(xdisplay, proc)
    wait_for(lambda: len(json_frames(tmp_path / "session_results.json")) >= 40, 60, "40 processed frames", proc)
    xdotool(xdisplay, "key", "--window", window, "s")
    shot = wait_for(lambda: sorted((tmp_path / "shots").glob("*.json")), 30, "the screenshot", proc)[0]
    xdotool(xdisplay, "key", "--window", window, "q")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "saved screenshot" in out and "latency capture to display: median" in out

    img = cv2.imread(str(shot.with_suffix(".png")))
    assert img is not None and img.shape == (360, 640, 3)
    record = json.loads(shot.read_text())
    assert len(record["faces"]) == 1, record
    face = record["faces"][0]
    [place] = panel_layout(img.shape, result_from_json(record))
    for i, name in enumerate(LABELS):
        bx, by, bw, bh = place.bar(i)
        filled = color_share(img, (bx, by + 1, bw, bh - 2), COLORS[name])
        assert abs(filled - face["probabilities"][name]) < 0.1, (name, filled, face["probabilities"][name])
    x, y, w, h = face["box"]
    s = _scale_of(img.shape)
    strips = [(x, y - int(22 * s), int(150 * s), int(18 * s)), (x, y + h + 4, int(150 * s), int(20 * s)),
              (x + 4, y + 4, int(150 * s), int(18 * s))]
    assert max(color_share(img, r, COLORS[face["emotion"]]) for r in strips) > 0.05, "no label text at the face"
    assert color_share(img, (0, 0, 300, int(30 * s)), (0, 255, 255), tol=60) > 0.02, "no status line"
    assert color_share(img, (0, 360 - int(24 * s), 300, int(24 * s)), (255, 255, 255), tol=60) > 0.02, "no help line"

    frames = json_frames(tmp_path / "session_results.json")
    video = cv2.VideoCapture(str(tmp_path / "session.mp4"))
    assert len(frames) >= 40 and video.get(cv2.CAP_PROP_FRAME_COUNT) >= len(frames)


@needs_shared
def test_keys_record_pause_objects_and_closing_the_window_exits_cleanly(xdisplay, tmp_path):
    proc = start_cli(
        "--realtime", "--source", WOLFGANG, "--save-dir", tmp_path, "--yolo-weights", "yolov8n.yaml",
        "--json", tmp_path / "session.json", cwd=tmp_path, display=xdisplay,
    )
    window = find_window(xdisplay, proc)
    wait_for(lambda: len(json_frames(tmp_path / "session.json")) >= 10, 60, "10 processed frames", proc)
    for key in ("r", "o", "h"):
        xdotool(xdisplay, "key", "--window", window, key)
        time.sleep(0.5)  # OpenCV's waitKey keeps only the last of the keys that arrive while a frame is processed
    recording = wait_for(lambda: sorted(tmp_path.glob("emotion_*_results.json")), 30, "the recording", proc)[0]
    wait_for(lambda: len(json_frames(recording)) >= 20, 60, "20 recorded frames", proc)
    xdotool(xdisplay, "key", "--window", window, "space")
    time.sleep(1.0)
    paused_at = len(json_frames(recording))
    time.sleep(1.5)
    assert len(json_frames(recording)) == paused_at, "frames were processed while paused"
    xdotool(xdisplay, "key", "--window", window, "space")
    wait_for(lambda: len(json_frames(recording)) > paused_at, 30, "frames after resuming", proc)
    close_window(xdisplay, window)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "recording to" in out and "object boxes on" in out

    frames = json.loads(recording.read_text())
    indices = [f["frame"] for f in frames]
    assert indices == sorted(set(indices)) and len(frames) > paused_at
    video = cv2.VideoCapture(str(recording.with_name(recording.name.replace("_results.json", ".mp4"))))
    ok, first = video.read()
    assert ok and first.shape == (360, 640, 3) and video.get(cv2.CAP_PROP_FRAME_COUNT) >= len(frames)


@needs_shared
def test_sigterm_while_recording_headless_leaves_complete_outputs(tmp_path):
    proc = start_cli(
        "--realtime", "--headless", "--no-sync", "--source", WOLFGANG, "--output", tmp_path / "live.mp4",
        "--csv", tmp_path / "live.csv", cwd=tmp_path,
    )
    wait_for(lambda: len(json_frames(tmp_path / "live_results.json")) >= 25, 90, "25 frames", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err

    frames = json.loads((tmp_path / "live_results.json").read_text())
    assert [f["frame"] for f in frames] == list(range(len(frames))), "--no-sync must process every frame in order"
    assert all(abs(f["time"] - f["frame"] / 23.976) < 1e-3 for f in frames)
    video = cv2.VideoCapture(str(tmp_path / "live.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    assert probe_video(tmp_path / "live.mp4")["codec"] == "h264"
    ok, first = video.read()
    assert ok and first.shape == (360, 640, 3)
    rows = (tmp_path / "live.csv").read_text().splitlines()
    assert len(rows) >= len(frames) + 1


def test_missing_camera_is_a_clear_error(tmp_path):
    proc = start_cli("--realtime", "--headless", "--source", "0", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("this machine has a camera at index 0")
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no camera at index 0"), err


def test_latest_frame_keeps_only_the_newest():
    buf = FrameBuffer(depth=1)
    frames = [Captured(i, i / 30, time.perf_counter(), np.full((2, 2, 3), i, np.uint8)) for i in range(4)]
    for f in frames[:3]:
        assert buf.put(f)
    assert buf.take(0.1).index == 2 and buf.dropped == 2
    assert buf.take(0.01) is None
    got = []
    reader = threading.Timer(0.3, lambda: got.append(buf.take(1.0)))
    reader.start()
    assert buf.put(frames[0]) and buf.put(frames[3], wait=True)  # waits until the reader took frame 0
    reader.join()
    assert got[0].index == 0 and buf.dropped == 2 and buf.take(0.1).index == 3
    buf.close()
    assert buf.finished and not buf.put(frames[0])


@needs_shared
def test_file_without_sync_delivers_every_frame_in_order():
    grabber = open_source(SINGLE, policy="lossless", depth=1).start()
    indices = []
    try:
        while not grabber.finished:
            cap = grabber.read(1.0)
            if cap is not None:
                indices.append(cap.index)
                assert cap.frame.shape == (360, 640, 3) and cap.time == pytest.approx(cap.index / 30.0)
    finally:
        grabber.close()
    assert indices == list(range(72)) and grabber.buffer.dropped == 0 and grabber.error is None


@needs_shared
def test_stream_is_reopened_after_a_drop_and_given_up_when_gone():
    cap = cv2.VideoCapture(str(SINGLE))
    jpegs = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(20)]
    cap.release()

    class MJPEG(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for jpg in jpegs:  # then the connection drops, as when a camera or network hiccups
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg))
                self.wfile.write(jpg + b"\r\n")
                time.sleep(0.02)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), MJPEG)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    grabber = open_source(url, policy="latest", reconnect_timeout=1.5).start()
    got = 0
    try:
        while got < 30:
            got += grabber.read(2.0) is not None
            assert not grabber.finished, grabber.error
        assert grabber.reconnects >= 1
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + 20
        while not grabber.finished and time.monotonic() < deadline:
            grabber.read(0.2)
    finally:
        grabber.close()
        server.server_close()
    assert grabber.finished and "did not come back within 1.5 s" in grabber.error


@pytest.fixture(scope="module")
def signal_frame():
    """A real face with its signals: the demo photo in the middle of a wider frame, so that its panel fits beside it."""
    from emotion import EmotionRecognizer
    from emotion.face import FaceConfig
    from emotion.io.files import read_image
    from emotion.jobs import demo_photo

    frame = np.full((540, 960, 3), 90, np.uint8)
    frame[70:470, 310:651] = cv2.resize(read_image(demo_photo()), (341, 400), interpolation=cv2.INTER_AREA)
    with EmotionRecognizer(face_config=FaceConfig(signals=True)) as rec:
        result = rec.predict_image(frame)
    assert len(result.faces) == 1 and result.faces[0].signals is not None
    return frame, result


def drawn(frame: np.ndarray, result: FrameResult, *show: str) -> np.ndarray:
    return draw_frame(frame.copy(), result, OverlayConfig(show=show))


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two drawings differ, as a boolean image."""
    return (a != b).any(axis=2)


def test_blendshape_bars_grow_the_panel_beside_the_face_not_on_it(signal_frame):
    frame, result = signal_frame
    face = result.faces[0]
    bars = drawn(frame, result, "blendshapes")
    diff = changed(drawn(frame, result), bars)
    x, y, w, h = face.box
    assert diff.any() and not diff[y : y + h, x : x + w].any(), "the bars (and the taller panel) stay off the face"
    [place] = panel_layout(frame.shape, result, OverlayConfig(show=("blendshapes",)))
    assert place.h > panel_layout(frame.shape, result)[0].h
    scores = np.sort(face.signals.blendshapes[1:])[::-1]  # without _neutral, highest first
    for row in range(5):
        filled = color_share(bars, place.blend_bar(row), BLEND_COLOR, tol=30)
        assert abs(filled - scores[row]) < 0.1, (row, filled, scores[row])


@pytest.mark.parametrize("show", ["pose", "gaze"])
def test_pose_axes_leave_the_nose_and_gaze_arrows_the_irises_and_nothing_else_moves(signal_frame, show):
    frame, result = signal_frame
    face = result.faces[0]
    image = drawn(frame, result, show)
    diff = changed(drawn(frame, result), image)
    size = max(face.box[2:])
    origins, length = ([face.landmarks[NOSE_TIP, :2]], AXIS_LENGTH) if show == "pose" else (face.signals.irises, GAZE_LENGTH)
    ys, xs = np.nonzero(diff)
    distance = np.min([np.hypot(xs - ox, ys - oy) for ox, oy in origins], axis=0)
    assert len(xs) > 20 and distance.max() <= length * size + 6, "only the axes or arrows, from where they start"
    x, y, w, h = face.box
    assert diff[y : y + h, x : x + w].mean() < 0.05, "thin lines, not a cover over the face"
    if show == "pose":  # the red axis, towards the person's left, points to the image's right on a frontal face
        red = (np.abs(image.astype(int) - AXIS_COLORS[0]).max(axis=2) <= 30) & diff
        assert red.sum() > 5 and np.nonzero(red)[1].mean() > face.landmarks[NOSE_TIP, 0]


def test_drawn_pose_is_the_rotation_the_angles_were_read_from():
    from emotion.signals import FaceSignals, euler

    for angles in [(0, 0, 0), (10, -6, -10), (40, 20, 30), (-70, -35, 120)]:
        assert np.allclose(euler(head_rotation(*angles)), angles, atol=1e-9)
    assert np.allclose(head_rotation(30, 0, 0)[:, 2], [0.5, 0, np.sqrt(0.75)]), "yaw > 0: towards the image's right"
    signals = FaceSignals(np.zeros(52), np.array([0.0, 0.0, 0.0]), np.array([30.0, 0.0]), np.zeros((2, 2)))
    assert np.allclose(gaze_direction(signals), [0.5, 0, np.sqrt(0.75)])
    turned = FaceSignals(np.zeros(52), np.array([0.0, 90.0, 0.0]), np.array([0.0, 0.0]), np.zeros((2, 2)))
    assert np.allclose(gaze_direction(turned), [0, 1, 0]), "a head turned up looks up"


def test_keys_b_p_g_toggle_the_signals_drawn():
    from emotion import EmotionError, EmotionRecognizer
    from emotion.app.config import RealtimeConfig
    from emotion.app.realtime import RealtimeApp
    from emotion.face import FaceConfig

    clip = ROOT / "tests" / "fixtures" / "signals_off_clip.mp4"
    for signals in (True, False):
        with EmotionRecognizer(face_config=FaceConfig(signals=signals)) as rec, open_source(clip) as source:
            app = RealtimeApp(rec, source, RealtimeConfig(headless=True))
            for key, expected in (("g", ("gaze",)), ("P", ("gaze", "pose")), ("b", ("gaze", "pose", "blendshapes")),
                                  ("g", ("pose", "blendshapes"))):  # fmt: skip
                app._key(ord(key))
                assert app.pipeline.overlay.show == (expected if signals else ())
            if not signals:
                assert "face signals are off" in app._notice[0]
                with pytest.raises(EmotionError, match="needs the face signals"):
                    RealtimeApp(rec, source, RealtimeConfig(headless=True, overlay=OverlayConfig(show=("pose",))))


def test_the_key_help_line_fits_a_640x480_webcam_frame():
    from emotion.app.realtime import HELP

    img = draw_text_line(np.zeros((480, 640, 3), np.uint8), HELP, -1)
    assert img[-30:, -12:].max() == 0 and img[-30:, :300].max() > 0, "the help line is cut off at the right edge"


@needs_shared
@pytest.mark.parametrize("name", ["multi_face.jpg", "group.jpeg"])
def test_taller_panels_with_blendshapes_still_cover_no_face_in_a_group(name):
    """Five faces per photo: the panels with blendshape bars are shrunk until none covers a face (without the shrink,
    one panel of each photo covered part of another face)."""
    from emotion import EmotionRecognizer
    from emotion.face import FaceConfig
    from emotion.overlay import _overlap

    image = cv2.imread(str(SHARED / "images" / name))
    with EmotionRecognizer(face_config=FaceConfig(signals=True)) as rec:
        result = rec.predict_image(image)
    assert len(result.faces) == 5
    places = panel_layout(image.shape, result, OverlayConfig(show=("blendshapes",)))
    assert [_overlap((p.x, p.y, p.w, p.h), f.box) for p in places for f in result.faces] == [0] * 25
    assert all(p.h > q.h for p, q in zip(places, panel_layout(image.shape, result)))
