"""Batches of videos on Ray (`--cluster`) and the batch options they share with the single-machine batch: manifests,
done-markers and `--resume`, a worker killed mid-video, Ctrl-C, and JSON identical to the local batch's."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotion.errors import EmotionError
from emotion.jobs import batch_jobs, read_manifest
from support import ROOT, SHARED, assert_clean_error, cli, needs_shared, write_clip

WOLFGANG = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs pip install "emotion[cluster]"')


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module (start-up takes seconds); the command line joins it by its address."""
    ray = pytest.importorskip("ray")
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def frames_by_video(folder: Path) -> dict[str, list]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*_results.json"))}


def assert_same_records(a, b, path="") -> None:
    """Equal JSON values, numbers to 1e-4 (the 4 decimals written, one rounding step either side)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_records(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_records(x, y, f"{path}[{k}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-4), path
    else:
        assert a == b, path


def assert_same_csv(a: Path, b: Path) -> None:
    """Same header and rows; numeric cells to 1e-4 (written to 4 decimals)."""
    rows_a, rows_b = (list(csv.reader(p.read_text().splitlines())) for p in (a, b))
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b) > 1, a.name
    for row_a, row_b in zip(rows_a[1:], rows_b[1:]):
        for x, y in zip(row_a, row_b, strict=True):
            try:
                assert float(x) == pytest.approx(float(y), abs=1e-4), (a.name, row_a[:3])
            except ValueError:
                assert x == y, (a.name, row_a[:3])


def worker_processes(title: str = "ray::VideoWorker.process") -> list[int]:
    """Processes under this one (the module's Ray) whose title says they run a video."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") != title:
                continue
        except OSError:
            continue
        pid = int(entry.name)
        while pid > 1:  # one of ours: an ancestor is this test process
            try:
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
            if pid == os.getpid():
                found.append(int(entry.name))
                break
    return found


def test_a_manifest_lists_videos_and_their_output_names(tmp_path):
    (tmp_path / "list.csv").write_text("path,name\nclips/a.avi,first\n\n/abs/b.mp4\n")
    (tmp_path / "list.jsonl").write_text('{"path": "clips/a.avi", "name": "first"}\n\n{"path": "/abs/b.mp4"}\n')
    expected = [(tmp_path / "clips" / "a.avi", "first"), (Path("/abs/b.mp4"), None)]
    assert read_manifest(tmp_path / "list.csv") == expected
    assert read_manifest(tmp_path / "list.jsonl") == expected
    jobs = batch_jobs(tmp_path / "list.csv", tmp_path / "out")
    assert [j.output.name for j in jobs] == ["first_annotated.mp4", "b_annotated.mp4"]
    assert [j.marker.name for j in jobs] == ["first_annotated_results.json.done", "b_annotated_results.json.done"]
    (tmp_path / "bad.jsonl").write_text('{"path": "a.avi"}\nnot json\n')
    with pytest.raises(EmotionError, match="line 2 is not JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "twice.csv").write_text("a.avi,same\nb.avi,same\n")
    with pytest.raises(EmotionError, match="same outputs: same"):
        batch_jobs(tmp_path / "twice.csv", None)
    (tmp_path / "folder.csv").write_text("a.avi,sub/name\n")
    with pytest.raises(EmotionError, match="not a plain file name"):
        read_manifest(tmp_path / "folder.csv")


def test_cluster_without_ray_names_the_extra(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    write_clip(tmp_path / "a.avi", frames=3)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    proc = cli("--video", tmp_path, "--cluster", "local", env=env, cwd=tmp_path)
    assert_clean_error(proc, 'pip install "emotion[cluster]"')
    assert not (tmp_path / "a_results.json").exists()


def test_cluster_options_need_a_batch(tmp_path):
    write_clip(tmp_path / "a.avi", frames=3)
    assert_clean_error(cli("--video", tmp_path / "a.avi", "--cluster", "local"), "--cluster", "manifest")
    assert_clean_error(cli("--video", tmp_path / "a.avi", "--csv-per-video"), "--csv-per-video", "--csv PATH")
    assert_clean_error(cli("--video", tmp_path, "--resume", "models/x/last.pt"), "--resume takes a file", "--train")
    assert_clean_error(cli("--video", tmp_path, "--workers", "2"), "--workers and --retries work with --cluster")
    help_text = cli("--help").stdout
    for option in ("--cluster", "--workers", "--retries", "--resume", "manifest"):
        assert option in help_text


def test_resume_on_one_machine_skips_the_videos_an_earlier_run_finished(tmp_path):
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "a.avi", frames=6)
    write_clip(tmp_path / "clips" / "b.avi", frames=9)
    (tmp_path / "b_results.json").write_text("[")  # what an interrupted run left: no marker, so redone
    first = cli("--video", tmp_path / "clips", "--resume", "--csv-per-video", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 of 2 videos processed" in first.stdout
    assert len(json.loads((tmp_path / "b_results.json").read_text())) == 9
    assert len((tmp_path / "b_results.csv").read_text().splitlines()) == 1 + 9  # header, a row per faceless frame
    (tmp_path / "a_results.csv").unlink()  # an output of a done video missing: it is redone
    assert sorted(p.name for p in tmp_path.glob("*.done")) == ["a_results.json.done", "b_results.json.done"]
    written = (tmp_path / "b_results.json").stat().st_mtime_ns
    again = cli("--video", tmp_path / "clips", "--resume", "--csv-per-video", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 of 2 videos processed, 1 done in an earlier run" in again.stdout
    assert (tmp_path / "b_results.json").stat().st_mtime_ns == written and (tmp_path / "a_results.csv").is_file()


@needs_shared
def test_ray_writes_what_the_local_batch_writes_and_resume_skips_done_videos(tmp_path, ray_address):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        f'{{"path": "{SHARED / "videos" / "single_face.mp4"}"}}\n'
        f'{{"path": "{SHARED / "videos" / "face_noface.mov"}", "name": "mixed"}}\n'
        '{"path": "broken.mp4"}\n'
    )
    local = cli("--video", manifest, "--output", tmp_path / "local", "--csv-per-video", "--no-progress")
    ray = cli("--video", manifest, "--output", tmp_path / "ray", "--cluster", ray_address, "--workers", "2",
              "--csv-per-video", "--no-progress")  # fmt: skip
    for proc in (local, ray):
        assert_clean_error(proc, "1 of 3 videos failed")
        assert "broken.mp4" in proc.stdout and "2 of 3 videos processed" in proc.stdout
    assert "videos per minute" in ray.stdout and "videos per minute" not in local.stdout
    local_files = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert local_files == ["mixed_annotated.mp4", "mixed_annotated_results.csv", "mixed_annotated_results.json",
                           "single_face_annotated.mp4", "single_face_annotated_results.csv",
                           "single_face_annotated_results.json"]  # fmt: skip
    markers = sorted(p.name for p in (tmp_path / "ray").glob("*.done"))
    assert markers == ["mixed_annotated_results.json.done", "single_face_annotated_results.json.done"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir() if p.suffix != ".done") == local_files
    local_json, ray_json = frames_by_video(tmp_path / "local"), frames_by_video(tmp_path / "ray")
    assert [len(v) for v in ray_json.values()] == [169, 72]
    assert sum(len(f["faces"]) for v in ray_json.values() for f in v) > 100
    assert_same_records(local_json, ray_json)
    for name in ("mixed_annotated_results.csv", "single_face_annotated_results.csv"):
        assert_same_csv(tmp_path / "local" / name, tmp_path / "ray" / name)

    # A rerun with --resume skips the two done videos; a removed marker makes its video run again.
    (tmp_path / "ray" / "mixed_annotated_results.json.done").unlink()
    done_before = (tmp_path / "ray" / "single_face_annotated_results.json").stat().st_mtime_ns
    again = cli("--video", manifest, "--output", tmp_path / "ray", "--cluster", ray_address, "--resume",
                "--no-progress")  # fmt: skip
    assert_clean_error(again, "1 of 3 videos failed")
    assert "done in an earlier run" in again.stdout and "1 of 3 videos processed, 1 done in an earlier run" in again.stdout
    assert (tmp_path / "ray" / "single_face_annotated_results.json").stat().st_mtime_ns == done_before
    assert (tmp_path / "ray" / "mixed_annotated_results.json.done").is_file()
    assert_same_records(local_json, frames_by_video(tmp_path / "ray"))


@needs_shared
@pytest.mark.parametrize("retries", [1, 0])
def test_a_killed_worker_has_its_video_retried_up_to_the_limit(tmp_path, ray_address, retries):
    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(3):
        (clips / f"v{k}.mp4").symlink_to(WOLFGANG)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--video", clips, "--cluster", ray_address, "--workers", "2",
         "--retries", str(retries), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        p.read_text().count('"frame"') >= 20 for p in tmp_path.glob("*_results.json")
    ):
        time.sleep(0.1)
    victims = worker_processes()
    assert victims, "no worker was running a video"
    os.kill(victims[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    rows = [line for line in out.splitlines() if line.startswith("v") and ".mp4" in line]
    assert "raylet" not in out + err  # Ray's own report of the death stays out of the table
    if retries:
        assert proc.returncode == 0, err
        assert all(" processed " in row for row in rows) and len(rows) == 3, out
        assert "retried after its worker died (1 time)" in out
        assert [len(v) for v in frames_by_video(tmp_path).values()] == [472] * 3
        assert len(list(tmp_path.glob("*.done"))) == 3
    else:
        assert_clean_error(subprocess.CompletedProcess([], proc.returncode, out, err), "1 of 3 videos failed")
        failed = [row for row in rows if " failed " in row]
        assert len(failed) == 1 and "its worker died 1 time (the worker process died" in failed[0], out
        name = failed[0].split()[0].replace(".mp4", "_results.json.done")
        assert not (tmp_path / name).exists() and len(list(tmp_path.glob("*.done"))) == 2


@needs_shared
@needs_ray
def test_ctrl_c_stops_the_batch_and_leaves_no_marker_on_unfinished_videos(tmp_path):
    """The terminal's Ctrl-C reaches the whole process group, Ray's own processes included (`--cluster local`)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(4):
        (clips / f"v{k}.mp4").symlink_to(WOLFGANG)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--video", clips, "--output", tmp_path / "out", "--cluster", "local",
         "--workers", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        p.read_text().count('"frame"') >= 30 for p in (tmp_path / "out").glob("*_results.json")
    ):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted: outputs written so far are complete and valid"], err
    assert "not started: the batch was stopped" in out and "0 of 4 videos processed" in out, out
    written = frames_by_video(tmp_path / "out")
    assert written and all(0 < len(frames) < 472 for frames in written.values())
    assert not list((tmp_path / "out").glob("*.done"))
