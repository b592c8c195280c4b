"""Pose control: MediaPipe's 33 landmarks -> OpenPose's 18 keypoints -> the skeleton in OpenPose's colours, on landmarks
recorded from the real pose network (tests/data/pose_astronaut.json), and the network itself when its bundle is here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime.errors import InputNotFound, ModelNotFound, UsageError
from realtime.vision import pose
from realtime.vision.pose import LIMB_DIM, LIMBS, OPENPOSE_COLOURS, PoseMap, coco18, draw_openpose

RECORDED = json.loads((Path(__file__).parent / "data" / "pose_astronaut.json").read_text())
LANDMARKS = np.array(RECORDED["landmarks"], np.float32)  # (33, 3): x px, y px, visibility on the 512x512 astronaut


def test_coco18_maps_mediapipe_landmarks_to_openpose_keypoints():
    kp = coco18(LANDMARKS)
    assert kp.shape == (18, 3)
    np.testing.assert_allclose(kp[0, :2], LANDMARKS[0, :2])  # nose
    np.testing.assert_allclose(kp[1, :2], (LANDMARKS[11, :2] + LANDMARKS[12, :2]) / 2)  # neck: between the shoulders
    np.testing.assert_allclose(kp[2, :2], LANDMARKS[12, :2])  # right shoulder = MediaPipe 12 (the person's right)
    np.testing.assert_allclose(kp[5, :2], LANDMARKS[11, :2])
    np.testing.assert_allclose(kp[14, :2], LANDMARKS[5, :2])  # right eye
    np.testing.assert_allclose(kp[17, :2], LANDMARKS[7, :2])  # left ear
    # The astronaut's upper body is in the picture: head and shoulders visible, hips and legs not.
    assert kp[[0, 1, 2, 5, 14, 15, 16, 17], 2].all() and not kp[[8, 9, 10, 11, 12, 13], 2].any()
    with pytest.raises(UsageError, match=r"\(33, 3\)"):
        coco18(LANDMARKS[:17])


def test_skeleton_keypoints_and_limbs_in_openpose_colours():
    kp = coco18(LANDMARKS)
    img = draw_openpose(kp, 512, 512)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    for i, (x, y, visible) in enumerate(kp):
        if visible:
            assert tuple(img[int(y), int(x)]) == OPENPOSE_COLOURS[i], i  # each joint: a disc of its own colour
        elif 0 <= x < 512 and 0 <= y < 512:
            assert tuple(img[int(y), int(x)]) != OPENPOSE_COLOURS[i], i  # a hidden one is not drawn
    # A limb's middle is its colour at OpenPose's 60 % (drawn before the joints): neck -> right shoulder is limb 0.
    a, b = LIMBS[0]
    mid = ((kp[a, :2] + kp[b, :2]) / 2).astype(int)
    assert tuple(img[mid[1], mid[0]]) == tuple(int(c * LIMB_DIM) for c in OPENPOSE_COLOURS[0])
    # Only OpenPose colours (full or dimmed) and black: no antialiasing, nothing else.
    allowed = {(0, 0, 0)} | set(OPENPOSE_COLOURS) | {tuple(int(c * LIMB_DIM) for c in col) for col in OPENPOSE_COLOURS}
    assert {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0)} <= allowed
    assert not draw_openpose(None, 64, 64).any()


def test_drawn_at_the_model_size():
    kp = coco18(LANDMARKS)
    scale = np.array([704 / 512, 384 / 512, 1.0], np.float32)
    wide = draw_openpose(kp * scale, 384, 704)
    assert wide.shape == (384, 704, 3)
    x, y = (kp[0, :2] * scale[:2]).astype(int)
    assert tuple(wide[y, x]) == OPENPOSE_COLOURS[0]
    small = draw_openpose(kp * np.array([0.25, 0.25, 1.0], np.float32), 128, 128)  # lines and joints shrink with the picture, keeping OpenPose's look
    assert 0 < np.count_nonzero(small.any(axis=2)) < np.count_nonzero(draw_openpose(kp, 512, 512).any(axis=2)) / 8


class _Recorded:
    def __init__(self, landmarks):
        self.value, self.closed = landmarks, False

    def landmarks(self, rgb, timestamp_s):
        return self.value

    def close(self):
        self.closed = True


def test_pose_map_draws_what_the_detector_found(astronaut):
    stage = PoseMap(_Recorded(LANDMARKS))
    assert np.array_equal(stage(astronaut), draw_openpose(coco18(LANDMARKS), 512, 512))
    stage.detector.value = None  # nobody in the picture: a black map (no pose)
    assert not stage(astronaut).any() and stage.last_keypoints is None
    stage.close()
    assert stage.detector.closed


def test_real_pose_network_finds_the_recorded_landmarks(astronaut, pose_task):
    """The legacy MediaPipe pose models (bundled with NormalizationOptions metadata by scripts/pose_task.py) in Tasks'
    PoseLandmarker: the same landmarks as recorded, within 3 px for the visible ones."""
    with pose.PoseDetector(pose_task) as det:
        lm = det.landmarks(astronaut, 0.0)
        assert det.landmarks(np.zeros((256, 256, 3), np.uint8), 0.04) is None  # nobody there
    assert lm is not None and lm.shape == (33, 3)
    visible = LANDMARKS[:, 2] >= 0.5
    assert np.abs(lm[visible, :2] - LANDMARKS[visible, :2]).max() < 3.0


def test_pose_model_resolves_like_the_face_model(tmp_path, monkeypatch):
    model = tmp_path / "pose.task"
    model.write_bytes(b"x")
    assert pose.resolve_pose_model(model) == model
    with pytest.raises(InputNotFound, match="--pose-model"):
        pose.resolve_pose_model(tmp_path / "missing.task")
    monkeypatch.setenv("STYLECAM_POSE_MODEL", str(model))
    assert pose.resolve_pose_model() == model
    monkeypatch.delenv("STYLECAM_POSE_MODEL")
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFound) as info:  # offline (conftest) and not cached: one line with the fix
        pose.resolve_pose_model()
    assert "\n" not in str(info.value) and "--pose-model PATH" in str(info.value) and "STYLECAM_POSE_MODEL" in str(info.value)
