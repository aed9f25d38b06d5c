"""The package as users get it: the wheel's contents, the declared dependencies, and a wheel installed elsewhere."""

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from support import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import emotion

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SHIPPED = ("fer2013_mini_xception.pt", "stnet.onnx", "README.md", "LICENSE-fer")


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=1800, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel . --no-deps`, with this environment's setuptools (no download)."""
    out = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q", "-w", out])
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("emotion-*.whl")
    return path


def test_wheel_holds_the_shipped_weights_licences_and_metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for name in SHIPPED:
        assert f"emotion/weights/{name}" in names
    assert f"emotion-{emotion.__version__}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith("models/")]
    metadata = zipfile.ZipFile(wheel).read(f"emotion-{emotion.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Requires-Python: <3.13,>=3.11" in metadata
    for requirement in PYPROJECT["dependencies"]:
        assert f"Requires-Dist: {Requirement(requirement)}" in metadata


def test_this_environment_has_what_pyproject_declares():
    """Every dependency at a version its pin allows, and this Python inside requires-python."""
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(platform.python_version())
    for line in PYPROJECT["dependencies"]:
        requirement = Requirement(line)
        version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), (line, version)


def test_both_opencv_packages_are_one_release():
    """opencv-python (for ultralytics) and opencv-contrib-python (for mediapipe) write the same cv2/ folder; with one
    version the shared files are one consistent build, and cv2 is that version."""
    import cv2

    versions = {name: importlib.metadata.version(name) for name in ("opencv-python", "opencv-contrib-python")}
    assert len(set(versions.values())) == 1, versions
    assert versions["opencv-python"].startswith(cv2.__version__ + ".")
    pins = {Requirement(r).name: str(Requirement(r).specifier) for r in PYPROJECT["dependencies"]}
    assert pins["opencv-python"] == pins["opencv-contrib-python"] == f"=={versions['opencv-python']}"


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_environment_works_from_any_folder(wheel, tmp_path, shared_data):
    """A new virtual environment outside the checkout, the wheel and its dependencies from the package index, then
    the installed `emotion` command and the API, run from an empty folder."""
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    try:
        proc = _run([sys.executable, "-m", "venv", venv], env=env)
        assert proc.returncode == 0, proc.stderr
        python, bindir = venv / "bin" / "python", venv / "bin"
        proc = _run([python, "-m", "pip", "install", "-q", wheel], env=env, cwd=work)
        assert proc.returncode == 0, proc.stderr[-3000:]
        proc = _run([python, "-m", "pip", "check"], env=env, cwd=work)
        assert proc.returncode == 0, proc.stdout

        photo = shared_data / "images" / "happy-baby.jpeg"
        proc = _run([bindir / "emotion", "--image", photo, "--output", "annotated.png"], env=env, cwd=work)
        assert proc.returncode == 0, proc.stderr
        assert re.fullmatch(rf"{re.escape(str(photo))}: face #0 happy \(probability [01]\.\d\d\)", proc.stdout.strip()), proc.stdout
        assert (work / "annotated.png").is_file()

        proc = _run([bindir / "emotion", "--version"], env=env, cwd=work)
        assert proc.stdout.strip() == f"emotion {emotion.__version__}"

        code = (
            "import importlib.metadata as m, cv2, emotion; from emotion import EmotionRecognizer; "
            "from emotion.weights import path; "
            "print(emotion.__file__, path('stnet.onnx').is_file(), m.version('opencv-python'), "
            "m.version('opencv-contrib-python'), cv2.__version__)"
        )
        proc = _run([python, "-c", code], env=env, cwd=work)
        assert proc.returncode == 0, proc.stderr
        module, onnx_shipped, opencv, contrib, cv2_version = proc.stdout.split()
        assert Path(module).is_relative_to(venv), module
        assert onnx_shipped == "True"
        assert opencv == contrib and opencv.startswith(cv2_version + ".")
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 6 GB with CUDA PyTorch
