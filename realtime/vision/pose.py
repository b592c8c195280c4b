"""Pose control: MediaPipe Tasks ``PoseLandmarker`` -> the OpenPose skeleton image the OpenPose ControlNet reads.

- :data:`POSE_MODEL`: the pose landmarker bundle (``.task``; Apache-2.0), resolved like the face model
  (``--pose-model PATH``, ``STYLECAM_POSE_MODEL``, the cache, then the official download, sha256 from MediaPipe's own
  ``third_party/external_files.bzl``). MediaPipe's legacy ``pose_detection.tflite`` + ``pose_landmark_*.tflite``
  load once ``scripts/pose_task.py`` has added their missing NormalizationOptions metadata and bundled them.
- :class:`PoseDetector`: ``landmarks(rgb, timestamp_s)`` -> (33, 3) float32 [x px, y px, visibility] of the most
  prominent person, or None.
- :func:`coco18`: MediaPipe's 33 landmarks -> OpenPose's 18 COCO body keypoints (the neck is the shoulders' midpoint).
- :func:`draw_openpose`: the skeleton in OpenPose's colours (limbs as ellipses at 60 % brightness, joints as full
  colour discs, on black), drawn at the model size; the layout ControlNet's OpenPose annotator draws
  (``controlnet_aux.open_pose.util.draw_bodypose``), written here from its definition (controlnet-aux itself pulls
  torchvision and imports ``mediapipe.solutions``, which current mediapipe removed).
- :class:`PoseMap`: detector + drawing: ``__call__(rgb)`` -> (H, W, 3) uint8 RGB skeleton (black when nobody is seen).
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np

from realtime.errors import BadInputFile, UsageError
from realtime.vision.face import import_mediapipe, quiet_native_stderr, track_open
from realtime.vision.modelfiles import ModelFile, resolve_model_file

__all__ = ["COCO_FROM_MEDIAPIPE", "LIMBS", "OPENPOSE_COLOURS", "POSE_MODEL", "PoseDetector", "PoseMap", "coco18",
           "draw_openpose", "resolve_pose_model"]

log = logging.getLogger(__name__)

POSE_MODEL = ModelFile(
    what="MediaPipe pose landmarker model",
    file="pose_landmarker.task",
    url="https://storage.googleapis.com/mediapipe-assets/pose_landmarker.task?generation=1681244249587900",
    sha256="fb9cc326c88fc2a4d9a6d355c28520d5deacfbaa375b56243b0141b546080596",
    size=None,  # MediaPipe's external_files.bzl pins the sha256 only
    env="STYLECAM_POSE_MODEL",
    option="--pose-model",
)

#: OpenPose's 18 body keypoints (COCO order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist,
#: r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear) as MediaPipe pose landmark indices;
#: None = the neck, the midpoint of both shoulders (11, 12). Left/right are the person's own, in both.
COCO_FROM_MEDIAPIPE: tuple[int | None, ...] = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
#: The 17 limbs OpenPose draws, as pairs of COCO keypoint indices (0-based), in drawing order.
LIMBS: tuple[tuple[int, int], ...] = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                                       (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
#: OpenPose's colour of keypoint i and of limb i (RGB).
OPENPOSE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0), (0, 255, 85),
    (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
    (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_DIM = 0.6  # limbs are drawn, then the whole canvas is dimmed to 60 %, then the joints go on top


def resolve_pose_model(explicit: str | os.PathLike[str] | None = None) -> Any:
    """The pose landmarker bundle (see the module docstring for the order)."""
    return resolve_model_file(POSE_MODEL, explicit)


def coco18(landmarks: np.ndarray, min_visibility: float = 0.5) -> np.ndarray:
    """(33, 3) [x, y, visibility] MediaPipe landmarks -> (18, 3) [x, y, visible 0/1] OpenPose keypoints. A keypoint
    is visible when its landmark's visibility is at least ``min_visibility`` (the neck: both shoulders)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape != (33, 3):
        raise UsageError(f"pose landmarks must be (33, 3) [x, y, visibility], got {lm.shape}")
    out = np.zeros((18, 3), np.float32)
    for i, j in enumerate(COCO_FROM_MEDIAPIPE):
        if j is None:
            out[i, :2] = (lm[11, :2] + lm[12, :2]) / 2
            out[i, 2] = min(lm[11, 2], lm[12, 2])
        else:
            out[i] = lm[j]
    out[:, 2] = (out[:, 2] >= min_visibility).astype(np.float32)
    return out


def draw_openpose(keypoints: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """(18, 3) [x px, y px, visible] keypoints (or None) -> (height, width, 3) uint8 RGB OpenPose skeleton on black.
    Line width and joint radius are OpenPose's 4 px at 512 px, scaled with the shorter side."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    if keypoints is None:
        return canvas
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.shape != (18, 3):
        raise UsageError(f"OpenPose keypoints must be (18, 3) [x, y, visible], got {kp.shape}")
    stick = max(1, round(4 * min(height, width) / 512))
    for (a, b), colour in zip(LIMBS, OPENPOSE_COLOURS[:len(LIMBS)], strict=True):
        if kp[a, 2] < 0.5 or kp[b, 2] < 0.5:
            continue
        (xa, ya), (xb, yb) = kp[a, :2], kp[b, :2]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        centre = (int((xa + xb) / 2), int((ya + yb) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, colour)
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for (x, y, visible), colour in zip(kp, OPENPOSE_COLOURS, strict=True):
        if visible >= 0.5:
            cv2.circle(canvas, (int(x), int(y)), stick, colour, thickness=-1)
    return canvas


class PoseDetector:
    """MediaPipe Tasks ``PoseLandmarker`` (VIDEO mode, one person). ``landmarks(rgb, timestamp_s)``: (H, W, 3) uint8
    RGB -> (33, 3) float32 [x px, y px, visibility], or None when nobody is found. Unverified with the official
    bundle here (no network): tested with the legacy models bundled by ``scripts/pose_task.py``."""

    def __init__(self, model: str | os.PathLike[str] | None = None, *, min_confidence: float = 0.5) -> None:
        self.model_path = resolve_pose_model(model)
        mp, vision, base_options = import_mediapipe("leave pose out of --control")
        self._mp = mp
        options = vision.PoseLandmarkerOptions(
            base_options=base_options(model_asset_path=str(self.model_path)), running_mode=vision.RunningMode.VIDEO,
            num_poses=1, min_pose_detection_confidence=min_confidence, min_pose_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        self._last_ms = -1
        self._det: Any = None
        with quiet_native_stderr():
            try:
                self._det = vision.PoseLandmarker.create_from_options(options)
            except (ValueError, RuntimeError, OSError) as e:
                raise BadInputFile(f"pose model {self.model_path} cannot be loaded by MediaPipe ({e}): "
                                   f"{POSE_MODEL.fix} with a pose landmarker .task bundle") from e
            track_open(self)
        log.debug("pose landmarker ready: %s", self.model_path)

    def landmarks(self, rgb: np.ndarray, timestamp_s: float) -> np.ndarray | None:
        if self._det is None:
            raise RuntimeError("PoseDetector is closed")
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise UsageError(f"pose detection needs an HxWx3 uint8 RGB frame, got {getattr(rgb, 'shape', type(rgb))}")
        ms = max(int(round(float(timestamp_s) * 1000.0)), self._last_ms + 1)
        self._last_ms = ms
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with quiet_native_stderr():
            result = self._det.detect_for_video(image, ms)
        if not result.pose_landmarks:
            return None
        h, w = rgb.shape[:2]
        return np.array([(p.x * w, p.y * h, p.visibility if p.visibility is not None else 1.0)
                         for p in result.pose_landmarks[0]], np.float32)

    def close(self) -> None:
        det, self._det = getattr(self, "_det", None), None
        if det is not None:
            with quiet_native_stderr():
                det.close()

    def __enter__(self) -> "PoseDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoseMap:
    """``__call__(rgb)`` -> the OpenPose skeleton (H, W, 3) uint8 RGB of the person in ``rgb`` (black if none).
    ``detector``: a :class:`PoseDetector` (or anything with ``landmarks``/``close``); None creates one from ``model``.
    Timestamps for VIDEO mode come from a monotonic clock."""

    def __init__(self, detector: Any = None, *, model: str | os.PathLike[str] | None = None) -> None:
        self.detector = detector if detector is not None else PoseDetector(model)
        self.last_keypoints: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        lm = self.detector.landmarks(rgb, time.monotonic())
        self.last_keypoints = None if lm is None else coco18(lm)
        return draw_openpose(self.last_keypoints, rgb.shape[0], rgb.shape[1])

    def close(self) -> None:
        self.detector.close()
