"""Shared fixtures: offline environment, tiny models built from config with a fixed seed, test images."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FACE_MODEL = REPO.parent / "shared" / "models" / "face_detection_short_range.tflite"
SHARED_SEGMENT_MODEL = REPO.parent / "shared" / "models" / "selfie_segmentation.tflite"
#: the legacy pose models bundled by scripts/pose_task.py (not shipped; see that script)
SHARED_POSE_TASK = REPO.parent / "shared" / "models" / "pose_landmarker_legacy_full.task"

# Tests never touch the network or the user's caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("STYLECAM_OFFLINE", "1")
if SHARED_FACE_MODEL.is_file():
    os.environ.setdefault("STYLECAM_FACE_MODEL", str(SHARED_FACE_MODEL))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread: tiny models gain nothing from more, and two threads on two busy cores (other tests, CI
    neighbours) make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("stylecam-cache")
    os.environ["STYLECAM_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def face_model_path() -> Path:
    path = Path(os.environ.get("STYLECAM_FACE_MODEL", SHARED_FACE_MODEL))
    assert path.is_file(), f"face model for tests missing: set STYLECAM_FACE_MODEL (looked at {path})"
    return path


@pytest.fixture(scope="session")
def segment_model_path() -> Path:
    path = Path(os.environ.get("STYLECAM_TEST_SEGMENT_MODEL", SHARED_SEGMENT_MODEL))
    assert path.is_file(), f"segmentation model for tests missing: set STYLECAM_TEST_SEGMENT_MODEL (looked at {path})"
    return path


@pytest.fixture(scope="session")
def pose_task() -> Path:
    """A real pose landmarker bundle: $STYLECAM_TEST_POSE_MODEL, else the shared legacy models bundled by
    scripts/pose_task.py; the test is skipped (with the way to make one) when there is none."""
    path = Path(os.environ.get("STYLECAM_TEST_POSE_MODEL", SHARED_POSE_TASK))
    if not path.is_file():
        pytest.skip(f"no pose landmarker bundle at {path}: make one with scripts/pose_task.py (needs tflite-support) "
                    "and set STYLECAM_TEST_POSE_MODEL")
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """skimage's astronaut: 512x512x3 uint8 RGB, a real face."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def _tiny_components_master():
    import torch

    from realtime.config import ModelConfig
    from realtime.diffusion.models import load_components

    return load_components(ModelConfig("random:tiny"), torch.device("cpu"), torch.float32, seed=0)


@pytest.fixture()
def tiny_components(_tiny_components_master):
    """Fresh (deep-copied) random:tiny components, safe to mutate (LoRA fusing)."""
    return copy.deepcopy(_tiny_components_master)


class ModelLoadReached(AssertionError):
    """Raised by :func:`no_model_load` when a command reaches model loading."""


@pytest.fixture()
def no_model_load(monkeypatch):
    """Loading a model is a test failure: the command's error (or refusal) must come before it."""
    import realtime.diffusion.build
    import realtime.diffusion.models

    def boom(*a, **k):
        raise ModelLoadReached("a model load was reached before the bad input was reported")

    monkeypatch.setattr(realtime.diffusion.models, "load_components", boom)
    monkeypatch.setattr(realtime.diffusion.build, "build_stylizer", boom)
