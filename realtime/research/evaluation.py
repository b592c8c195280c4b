"""Evaluate a stylized image or clip against its input: reads the files, runs :mod:`realtime.research.metrics`, MediaPipe face
detection and the CLIP score, and builds the report (a JSON-able dict and a markdown table). ``scripts/evaluate.py`` is
the command line over :func:`evaluate_images` and :func:`evaluate_clip`.

Images are read as ``stylecam image`` reads them (:func:`realtime.io.images.read_image`); clips are decoded frame by frame
through the reader ``stylecam clip`` uses (:class:`realtime.io.videofile.FileSource`: display rotation applied, memory
flat whatever the length) and paired by frame index; when the two
differ in length the shorter one sets the count, and the report says so. When the output's size differs from the input's,
each output frame is scaled to cover the input size and centre-cropped (:func:`realtime.geometry.cover_resize`), and the
report says so too. Metrics that cannot be computed are ``null`` with the reason under ``reasons``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import BadInputFile, InputError, ModelNotFound, UsageError
from realtime.files import check_input_file
from realtime.io.images import read_image
from realtime.research.metrics import (
    EdgeScore,
    FlowEstimator,
    MetricSettings,
    RunningMean,
    box_iou,
    canny_edges,
    edge_f1,
    flicker_index,
    match_size,
    ssim_luma,
    warp_error,
)

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "anime portrait of a person, anime style"

# name -> one sentence: used by the markdown table and by ``evaluate.py --help``.
METRIC_DOCS: dict[str, str] = {
    "edge_f1": "F1 of the output's Canny edges against the input's, matched within the edge tolerance (1 = same structure).",
    "edge_precision": "Share of the output's edge pixels that lie near an input edge (low = invented edges).",
    "edge_recall": "Share of the input's edge pixels that the output keeps (low = lost structure).",
    "ssim": "SSIM of the luminance, Gaussian window sigma 1.5 (1 = identical, 0 = unrelated).",
    "warp_error": "Mean |output(t) - previous output warped by the input's optical flow| in [0, 1], occlusions masked "
    "(0 = the output moves exactly with the input).",
    "warp_valid_fraction": "Share of pixels that passed the forward-backward flow check and entered the warp error.",
    "flicker_index": "Mean |output(t) - output(t-1)| in [0, 1] where the input did not change (0 = no flicker).",
    "static_fraction": "Share of pixels whose input was static between consecutive frames (where flicker is measured).",
    "face_preservation": "Share of frames with a face in the input where MediaPipe also finds a face in the output.",
    "face_iou": "Mean IoU of the output's face box with the input's, over frames where both have a face (1 = same place).",
    "clip_score": "Cosine similarity of the CLIP embeddings of the output and the prompt (higher = closer to the style).",
    "clip_score_input": "The same CLIP score for the input: the baseline the output's score should rise above.",
}
IMAGE_METRICS = ("edge_f1", "edge_precision", "edge_recall", "ssim", "face_preservation", "face_iou", "clip_score",
                 "clip_score_input")
CLIP_METRICS = IMAGE_METRICS[:4] + ("warp_error", "warp_valid_fraction", "flicker_index", "static_fraction") + IMAGE_METRICS[4:]


@dataclass(frozen=True)
class EvalOptions:
    """What to compute.

    face: run face preservation (needs a MediaPipe face model: ``face_model`` or the usual resolution, see
        :func:`realtime.vision.face.resolve_face_model`); an explicit ``face_model`` that cannot be used is an error, a default
        one that cannot be resolved makes the face metrics null with the reason.
    clip: run the CLIP score against ``prompt`` (None: :data:`DEFAULT_PROMPT`) with ``clip_model`` (None: the default hub
        id). With neither given explicitly only weights already on disk are used and missing ones make the metric null;
        an explicit ``prompt`` or ``clip_model`` asks for CLIP, so missing weights are an error (and a download is
        allowed unless ``HF_HUB_OFFLINE`` is set).
    every: clips: structure, face and CLIP metrics on every ``every``-th frame (temporal ones use every pair).
    clip_every: clips: the CLIP score on every ``clip_every``-th frame (it is the slow one on CPU).
    max_frames: clips: compare at most this many frames (None = all).
    """

    settings: MetricSettings = field(default_factory=MetricSettings)
    face: bool = True
    face_model: Path | None = None
    min_face_confidence: float = 0.5
    clip: bool = True
    prompt: str | None = None
    clip_model: str | None = None
    clip_device: str = "cpu"
    every: int = 1
    clip_every: int = 10
    max_frames: int | None = None

    def __post_init__(self) -> None:
        for name in ("every", "clip_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name}={value!r}: must be an integer >= 1")
        if self.max_frames is not None and (not isinstance(self.max_frames, int) or self.max_frames < 2):
            raise UsageError(f"max_frames={self.max_frames!r}: must be an integer >= 2 (or None for all)")
        if not 0.0 < self.min_face_confidence < 1.0:
            raise UsageError(f"min_face_confidence={self.min_face_confidence}: must be in (0, 1)")
        if self.prompt is not None and not self.prompt.strip():
            raise UsageError("prompt: empty (give a style description, or leave it out for the default)")

    @property
    def clip_requested(self) -> bool:
        """True when the user explicitly asked for the CLIP score (a prompt or a model)."""
        return self.clip and (self.prompt is not None or self.clip_model is not None)


# ------------------------------------------------------------------------------------------------------------------- inputs


class VideoReader:
    """A video file frame by frame through :class:`realtime.io.videofile.FileSource`, the reader ``stylecam clip`` uses:
    HxWx3 uint8 RGB frames with the display rotation applied, an undecodable frame in the middle repeated (so frame
    indices stay paired), memory flat. ``info`` has width and height (as displayed), fps and the frame count from the
    metadata (None when the container does not say) and the codec. Context manager; ``close()``."""

    def __init__(self, path: Path) -> None:
        from realtime.io.media import open_input
        from realtime.io.videofile import FileSource

        self.path = check_input_file(path)
        with open_input(self.path) as container:  # the metadata as the container states it
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps, frames, codec = float(rate) if rate else None, int(stream.frames) or None, stream.codec_context.name
        self._source = FileSource(self.path, queue_size=4)
        size = self._source.size
        self.info: dict[str, Any] = {"path": str(self.path), "width": size.width, "height": size.height, "fps": fps,
                                     "frames_in_metadata": frames, "codec": codec}

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self._source.read()) is not None:
            yield frame.image

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------------ face and CLIP


class FacePairScorer:
    """Face preservation over frames: ``add(inp, out, t)`` detects faces in both (HxWx3 uint8 RGB, same size) with
    MediaPipe; ``result()`` gives ``face_preservation`` and ``face_iou`` (see :data:`METRIC_DOCS`) plus the counts.

    The input's face is its highest-scoring detection; the output's is the detection that overlaps it most.
    """

    def __init__(self, model_path: Path, min_confidence: float = 0.5) -> None:
        from realtime.vision.face import FaceDetector

        self.model_path = Path(model_path)
        # One detector per stream: MediaPipe's video mode wants increasing timestamps per detector.
        self._det_in = FaceDetector(self.model_path, min_detection_confidence=min_confidence)
        self._det_out = FaceDetector(self.model_path, min_detection_confidence=min_confidence)
        self.frames = self.with_input_face = self.found = self.output_only = 0
        self._iou = RunningMean()

    def add(self, inp: np.ndarray, out: np.ndarray, timestamp_s: float) -> None:
        faces_in = self._det_in.detect(inp, timestamp_s)
        faces_out = self._det_out.detect(out, timestamp_s)
        self.frames += 1
        if not faces_in:
            self.output_only += bool(faces_out)
            return
        self.with_input_face += 1
        ref = max(faces_in, key=lambda f: f.score)
        if faces_out:
            self.found += 1
            self._iou.add(max(box_iou((ref.x, ref.y, ref.w, ref.h), (f.x, f.y, f.w, f.h)) for f in faces_out))

    def result(self) -> tuple[dict[str, float | None], dict[str, str], dict[str, int]]:
        counts = {"face_frames_checked": self.frames, "face_frames_with_input_face": self.with_input_face,
                  "face_frames_output_found": self.found, "face_frames_output_only": self.output_only}
        reasons: dict[str, str] = {}
        if self.with_input_face == 0:
            reasons = {k: "MediaPipe finds no face in the input" for k in ("face_preservation", "face_iou")}
            return {"face_preservation": None, "face_iou": None}, reasons, counts
        if self._iou.value is None:
            reasons["face_iou"] = "MediaPipe finds no face in the output"
        return {"face_preservation": self.found / self.with_input_face, "face_iou": self._iou.value}, reasons, counts

    def close(self) -> None:
        self._det_in.close()
        self._det_out.close()


def open_face_scorer(opts: EvalOptions) -> tuple[FacePairScorer | None, str | None]:
    """The face scorer, or ``(None, reason)`` when off or when the default model cannot be resolved."""
    if not opts.face:
        return None, "turned off (--no-face)"
    from realtime.vision.face import resolve_face_model

    if opts.face_model is not None and not Path(opts.face_model).is_file():
        raise ModelNotFound(f"--face-model {opts.face_model}: no such file")
    try:
        model = resolve_face_model(opts.face_model)
    except InputError as e:
        if opts.face_model is not None:
            raise
        log.info("face metrics skipped: %s", e)
        return None, f"no face model ({e}); pass --face-model PATH or set STYLECAM_FACE_MODEL"
    return FacePairScorer(model, opts.min_face_confidence), None


def open_clip_scorer(opts: EvalOptions):  # -> tuple[ClipScorer | None, str | None]
    """The CLIP scorer, or ``(None, reason)`` when off or when default weights are not on disk (see :class:`EvalOptions`)."""
    from realtime.research.clip_score import DEFAULT_CLIP_MODEL, ClipScorer

    if not opts.clip:
        return None, "turned off (--no-clip)"
    spec, prompt = opts.clip_model or DEFAULT_CLIP_MODEL, opts.prompt or DEFAULT_PROMPT
    try:
        return ClipScorer(spec, prompt, allow_download=opts.clip_requested, device=opts.clip_device), None
    except ModelNotFound as e:
        if opts.clip_requested:
            raise
        log.info("CLIP score skipped: %s", e)
        return None, f"no CLIP weights on disk for {spec} (pass --prompt or --clip-model to download or point at them)"


# ------------------------------------------------------------------------------------------------------------ the evaluation


class _Scores:
    """Running means of every metric over the frames of one evaluation."""

    def __init__(self, opts: EvalOptions, face: FacePairScorer | None, clip: Any) -> None:
        self.opts, self.face, self.clip = opts, face, clip
        self.means = {name: RunningMean() for name in CLIP_METRICS if not name.startswith(("face_", "clip_"))}
        self.means.update(clip_score=RunningMean(), clip_score_input=RunningMean())
        self.flow = FlowEstimator(opts.settings.flow)

    def frame(self, inp: np.ndarray, out: np.ndarray, timestamp_s: float) -> None:
        """Structure and face metrics of one frame pair (input, output; HxWx3 uint8 RGB, same size)."""
        s = self.opts.settings
        edges: EdgeScore = edge_f1(canny_edges(inp, s.canny_sigma, s.canny_blur), canny_edges(out, s.canny_sigma, s.canny_blur),
                                   s.edge_tolerance)
        self.means["edge_f1"].add(edges.f1)
        self.means["edge_precision"].add(edges.precision)
        self.means["edge_recall"].add(edges.recall)
        self.means["ssim"].add(ssim_luma(inp, out, s.ssim_sigma))
        if self.face is not None:
            self.face.add(inp, out, timestamp_s)

    def clip_frame(self, inp: np.ndarray, out: np.ndarray) -> None:
        """CLIP scores of one frame pair (no-op without a CLIP scorer)."""
        if self.clip is not None:
            self.means["clip_score"].add(self.clip.score(out))
            self.means["clip_score_input"].add(self.clip.score(inp))

    def pair(self, in_prev: np.ndarray, in_cur: np.ndarray, out_prev: np.ndarray, out_cur: np.ndarray) -> None:
        w = warp_error(in_prev, in_cur, out_prev, out_cur, self.opts.settings, self.flow)
        self.means["warp_error"].add(w.error)
        self.means["warp_valid_fraction"].add(w.valid_fraction)
        f = flicker_index(in_prev, in_cur, out_prev, out_cur, self.opts.settings.static_threshold)
        self.means["flicker_index"].add(f.index)
        self.means["static_fraction"].add(f.static_fraction)

    def collect(self, names: tuple[str, ...], face_reason: str | None, clip_reason: str | None):
        metrics: dict[str, float | None] = {n: self.means[n].value for n in names if n in self.means}
        reasons: dict[str, str] = {}
        counts: dict[str, int] = {}
        if self.face is not None:
            face_metrics, face_reasons, counts = self.face.result()
            metrics.update(face_metrics)
            reasons.update(face_reasons)
        else:
            metrics.update(face_preservation=None, face_iou=None)
            reasons.update(face_preservation=face_reason or "", face_iou=face_reason or "")
        if self.clip is None:
            reasons.update(clip_score=clip_reason or "", clip_score_input=clip_reason or "")
        for name in ("warp_error", "flicker_index"):
            if name in metrics and metrics[name] is None:
                reasons[name] = ("no pixel passed the flow consistency check" if name == "warp_error"
                                 else "no static pixels between consecutive input frames")
        return {n: metrics.get(n) for n in names}, reasons, counts


def _settings(opts: EvalOptions, face: FacePairScorer | None, clip: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(opts.settings.to_dict())
    out["face"] = {"model": str(face.model_path), "min_confidence": opts.min_face_confidence} if face else None
    out["clip"] = clip.describe() if clip is not None else None
    return out


def _report(mode: str, inputs: dict[str, Any], settings: dict[str, Any], notes: list[str], metrics: dict[str, Any],
            reasons: dict[str, str], frames: dict[str, Any]) -> dict[str, Any]:
    from realtime import __version__

    return {"tool": "stylecam evaluate", "version": __version__, "mode": mode, "inputs": inputs, "settings": settings,
            "frames": frames, "notes": notes, "metrics": metrics, "reasons": reasons}


def _resize_note(out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> tuple[dict[str, Any], str]:
    src, dst = [out_shape[1], out_shape[0]], [in_shape[1], in_shape[0]]
    note = f"output is {src[0]}x{src[1]}, input {dst[0]}x{dst[1]}: output resized to the input size (cover + centre crop)"
    return {"from": src, "to": dst, "method": "cover + centre crop"}, note


def evaluate_images(input_path: Path, output_path: Path, opts: EvalOptions | None = None) -> dict[str, Any]:
    """Compare one stylized image with its input; returns the report (see :func:`to_markdown`)."""
    opts = opts or EvalOptions()
    inp, out_raw = read_image(check_input_file(input_path)), read_image(check_input_file(output_path))
    out, resized = match_size(out_raw, inp)
    inputs = {"input": {"path": str(input_path), "width": inp.shape[1], "height": inp.shape[0]},
              "output": {"path": str(output_path), "width": out_raw.shape[1], "height": out_raw.shape[0]}}
    notes: list[str] = []
    if resized:
        inputs["resized_output"], note = _resize_note(out_raw.shape, inp.shape)
        notes.append(note)
    face, face_reason = open_face_scorer(opts)
    clip, clip_reason = None, None
    try:
        clip, clip_reason = open_clip_scorer(opts)
        scores = _Scores(opts, face, clip)
        scores.frame(inp, out, 0.0)
        scores.clip_frame(inp, out)
        metrics, reasons, counts = scores.collect(IMAGE_METRICS, face_reason, clip_reason)
        settings = _settings(opts, face, clip)
    finally:
        if face is not None:
            face.close()
        if clip is not None:
            clip.close()
    return _report("images", inputs, settings, notes, metrics, reasons, {"compared": 1, **counts})


def evaluate_clip(input_path: Path, output_path: Path, opts: EvalOptions | None = None, *,
                  progress: bool = False) -> dict[str, Any]:
    """Compare a stylized clip with its input, frame by frame; returns the report (see :func:`to_markdown`)."""
    opts = opts or EvalOptions()
    notes: list[str] = []
    face = clip = None
    with VideoReader(Path(input_path)) as vin, VideoReader(Path(output_path)) as vout:
        inputs: dict[str, Any] = {"input": vin.info, "output": vout.info}
        if vin.info["fps"] and vout.info["fps"] and abs(vin.info["fps"] - vout.info["fps"]) > 0.01:
            notes.append(f"frame rates differ ({vin.info['fps']:.3f} vs {vout.info['fps']:.3f} fps): paired by frame index")
        fps = vin.info["fps"] or 30.0
        try:
            face, face_reason = open_face_scorer(opts)
            clip, clip_reason = open_clip_scorer(opts)
            scores = _Scores(opts, face, clip)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=opts.max_frames or vin.info["frames_in_metadata"], unit="frame", leave=False)
            it_in, it_out = iter(vin), iter(vout)
            n, prev, longer = 0, None, None
            while opts.max_frames is None or n < opts.max_frames:
                a, b = next(it_in, None), next(it_out, None)
                if a is None or b is None:
                    longer = "input" if a is not None else "output" if b is not None else None
                    break
                raw_shape = b.shape
                b, resized = match_size(b, a)
                if resized and "resized_output" not in inputs:
                    inputs["resized_output"], note = _resize_note(raw_shape, a.shape)
                    notes.append(note)
                if n % opts.every == 0:
                    scores.frame(a, b, n / fps)
                if n % opts.clip_every == 0:
                    scores.clip_frame(a, b)
                if prev is not None and prev[0].shape == a.shape:
                    scores.pair(prev[0], a, prev[1], b)
                prev = (a, b)
                n += 1
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            if n < 2:
                raise BadInputFile(f"{input_path if n == 0 or longer == 'output' else output_path}: "
                                   f"{'no' if n == 0 else 'only one'} frame to compare (a clip needs at least 2)")
            if longer is not None:
                notes.append(f"the {longer} has more frames than the {'output' if longer == 'input' else 'input'}: "
                             f"compared the first {n} (the shorter clip)")
            elif opts.max_frames is not None and n == opts.max_frames:
                notes.append(f"stopped after --max-frames {n}")
            metrics, reasons, counts = scores.collect(CLIP_METRICS, face_reason, clip_reason)
            settings = _settings(opts, face, clip)
            settings.update(every=opts.every, clip_every=opts.clip_every, max_frames=opts.max_frames)
        finally:
            if face is not None:
                face.close()
            if clip is not None:
                clip.close()
    frames = {"compared": n, "pairs": scores.means["warp_valid_fraction"].count, "shorter": longer and
              ("output" if longer == "input" else "input"), **counts}
    return _report("clip", inputs, settings, notes, metrics, reasons, frames)


# ---------------------------------------------------------------------------------------------------------------- output


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (metric, value, what it measures), with the inputs above and notes below."""
    ins = report["inputs"]
    lines = [f"**stylecam evaluate ({report['mode']})**: `{ins['input']['path']}` (input) vs `{ins['output']['path']}`"
             f" (output), {report['frames']['compared']} frame(s) compared", "",
             "| metric | value | what it measures |", "|---|---|---|"]
    for name, value in report["metrics"].items():
        shown = _fmt(value) if value is not None else f"n/a: {report['reasons'].get(name, 'not computed')}"
        lines.append(f"| {name} | {_cell(shown)} | {_cell(METRIC_DOCS[name])} |")
    if report["notes"]:
        lines.append("")
        lines.extend(f"- {note}" for note in report["notes"])
    return "\n".join(lines) + "\n"


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"
