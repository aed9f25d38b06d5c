"""--image streams: one image at a time, its JSON valid on disk after every image, a bad image reported while the
others go on, and the outputs checked before any image is read."""

import json

import cv2
from support import assert_clean_error, cli


def test_images_stream_and_a_bad_one_does_not_stop_the_others(shared_data, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = cv2.imread(str(shared_data / "images" / "single_face.jpg"))
    for name in ("a.jpg", "c.jpg"):
        cv2.imwrite(str(photos / name), photo)
    (photos / "b.jpg").write_bytes((shared_data / "images" / "single_face.jpg").read_bytes()[:300])
    proc = cli("--image", photos, "--json", tmp_path / "r.json", "--output", tmp_path / "out")
    assert_clean_error(proc, "1 of 3 images could not be read")
    lines = proc.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(photos / n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert "failed: cannot decode image" in lines[1] and "face #0" in lines[2]
    records = json.loads((tmp_path / "r.json").read_text())
    assert [r["image"] for r in records] == [str(photos / "a.jpg"), str(photos / "c.jpg")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_annotated.png", "c_annotated.png"]


def test_image_json_is_valid_on_disk_after_every_image(shared_data, tmp_path):
    from emotion import EmotionRecognizer
    from emotion.jobs import run_images

    images = [shared_data / "images" / n for n in ("single_face.jpg", "neutral.jpeg", "happy-baby.jpeg")]
    with EmotionRecognizer() as recognizer:
        for count, (path, record, error) in enumerate(run_images(recognizer, images, json_path=tmp_path / "r.json"), 1):
            assert error is None
            on_disk = json.loads((tmp_path / "r.json").read_text())
            assert len(on_disk) == count and on_disk[-1] == json.loads(json.dumps(record))


def test_image_outputs_are_checked_before_any_image_is_processed(shared_data, tmp_path):
    (tmp_path / "taken.json").write_text("keep me")
    proc = cli("--image", shared_data / "images" / "single_face.jpg", tmp_path / "missing.jpg")
    assert_clean_error(proc, "not found", "missing.jpg")
    assert proc.stdout == ""
    proc = cli("--image", shared_data / "images" / "single_face.jpg", "--json", tmp_path / "taken.json")
    assert_clean_error(proc, "already exists")
    assert proc.stdout == "" and (tmp_path / "taken.json").read_text() == "keep me"
