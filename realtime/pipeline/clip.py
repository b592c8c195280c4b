"""The clip job behind ``stylecam clip IN [IN ...] -o OUT``: stylize video files, keeping their audio and timing, never leaving a broken file.

One frame at a time (memory stays flat whatever the clip length): :class:`~realtime.io.videofile.FileSource` decodes on a
thread (bounded queue, rotation applied, undecodable frames repeated), :class:`~realtime.pipeline.processor.FrameProcessor` does
what live does (face framing -> crop to the model size -> Canny -> stylizer with its temporal blending -> cover the
output size), :class:`~realtime.io.videowriter.VideoFileSink` encodes with the input's own timestamps into a temporary file
next to the target, copies the audio (re-encoded only when the container needs it) and renames the file into place
only when everything succeeded. Images between the stages are HxWx3 uint8 RGB numpy arrays.

Several inputs go to a directory (``-o outdir/``): the models are loaded once, each file gets its own progress bar, a
failing file is reported on its own line and the others go on (exit 1 when any failed, docs/design.md §7).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import ModelConfig, RegionConfig, RunConfig, StyleConfig
from realtime.errors import DeviceUnavailable, InputError, OutputError, UsageError
from realtime.files import check_input_file, check_output_path, same_file
from realtime.geometry import Size
from realtime.io.segments import SEGMENT_ENCODER_OPTIONS, Segment
from realtime.pipeline.preflight import check_container, check_region, check_style_models, check_video, face_model

log = logging.getLogger(__name__)

DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PIX_FMT = "libx264", 18, "yuv420p"
_HW_ENCODER_MARKERS = ("nvenc", "qsv", "amf", "vaapi", "videotoolbox", "v4l2m2m", "mediacodec")
_SUBSAMPLED = ("yuv420", "yuvj420", "nv12", "nv21", "yuv422", "yuvj422", "p010", "p016")


# ------------------------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class ClipOptions:
    """How clips are cut and encoded.

    start, end: seconds from the start of each input (``None``: its beginning / its end). output_size: ``None`` = the
    input's display size (after rotation; rounded down to even sides for subsampled pixel formats). codec, crf,
    pix_fmt: the video encoder (``codec=None``: the output container's default, libx264 or VP9 for WebM; crf is
    ignored, with a log line, by encoders without one). overwrite: replace existing
    outputs. face: follow the face like live; face_model: its MediaPipe ``.tflite`` (``None``: resolved as
    :func:`realtime.vision.face.resolve_face_model`). progress: show a progress bar per file. queue_size: decoded frames
    buffered ahead of the stylizer. region: what gets stylized and what the rest shows (``--region``, ``--background``).
    """

    start: float | None = None
    end: float | None = None
    output_size: Size | None = None
    codec: str | None = None
    crf: int = DEFAULT_CRF
    pix_fmt: str = DEFAULT_PIX_FMT
    overwrite: bool = False
    face: bool = True
    face_model: str | None = None
    progress: bool = True
    queue_size: int = 8
    region: RegionConfig = RegionConfig()  # --region/--background, as live

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0):
                raise UsageError(f"--{name} {v!r}: must be a number of seconds >= 0")
        if self.end is not None and self.end <= (self.start or 0.0):
            raise UsageError(f"--end {self.end!r}: must be after --start ({self.start or 0})")
        if self.output_size is not None and not isinstance(self.output_size, Size):
            raise UsageError(f"output_size {self.output_size!r}: must be a Size or None")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 63:
            raise UsageError(f"--crf {self.crf!r}: must be an integer in 0..63 (lower is better; 18 is near lossless)")
        for name in ("codec", "pix_fmt"):
            if name == "codec" and self.codec is None:
                continue  # the container's default
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: must be a non-empty name")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise UsageError(f"queue_size {self.queue_size!r}: must be an integer >= 1")


@dataclass(frozen=True)
class ClipResult:
    """What one file gave: ``frames`` written (undecodable ones repeated, so as many as the input range holds),
    ``bad_frames`` (undecodable), ``face_frames`` (frames framed on a tracked face), ``video_seconds`` (the output's
    video length), ``wall_seconds`` (processing time, models already loaded), ``stage_ms`` (mean milliseconds per frame
    for each stage: decode wait, face, crop, canny, stylize, resize, encode), ``skipped`` (frames the similarity
    filter answered with the previous stylized image)."""

    input: Path
    output: Path
    size: Size
    frames: int
    bad_frames: int
    face_frames: int
    video_seconds: float
    wall_seconds: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    skipped: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0


def check_encoder(codec: str, pix_fmt: str) -> None:
    """Fail before any work when ``codec`` is unknown (:class:`UsageError`), cannot take ``pix_fmt`` (same), or is a
    hardware encoder this machine cannot open (:class:`DeviceUnavailable`, naming libx264 as the fix)."""
    import av

    from realtime.io.videowriter import check_video_codec

    enc = check_video_codec(codec)
    formats = [f.name for f in (enc.video_formats or [])]
    if formats and pix_fmt not in formats:
        raise UsageError(f"--pix-fmt {pix_fmt!r}: codec {enc.name} takes {', '.join(formats[:8])}")
    if not any(m in enc.name for m in _HW_ENCODER_MARKERS):
        return
    ctx = av.CodecContext.create(enc.name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 256, 256, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
    try:
        ctx.open()
    except av.error.FFmpegError as e:
        raise DeviceUnavailable(
            f"encoder {enc.name} cannot be opened on this machine (no GPU encoder or driver: "
            f"{getattr(e, 'strerror', None) or e}): use --codec {DEFAULT_CODEC}"
        ) from e
    finally:
        del ctx


def plan_outputs(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Pair each input with its output. One input and a file name: that file. Several inputs, or an output that is a
    directory (or ends with ``/``): ``output/<input name>``. Raises before any work for a missing or unwritable output
    directory (:class:`OutputError`), two inputs with the same name, or an output that is its input."""
    srcs = [Path(p).expanduser() for p in inputs]
    if not srcs:
        raise UsageError("give at least one input clip")
    text = os.fspath(output)
    out = Path(text).expanduser()
    to_dir = len(srcs) > 1 or text.endswith(("/", os.sep)) or out.is_dir()
    if not to_dir:
        return [(srcs[0], out)]
    if not out.is_dir():
        if out.exists():
            raise UsageError(f"-o {out}: with several inputs the output must be a directory")
        raise OutputError(f"output directory does not exist: {out} (create it first)")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {out}")
    pairs: list[tuple[Path, Path]] = []
    seen: dict[Path, Path] = {}
    for src in srcs:
        dst = out / src.name
        key = dst.resolve()
        for other in srcs:  # any input of the batch, not only its own (out/x.mp4 may be a link to another input)
            if same_file(dst, other):
                whose = "its input" if other == src else f"the input {other}"
                raise OutputError(f"output {dst} would be {whose}: choose another output directory")
        if key in seen:
            raise UsageError(f"{seen[key]} and {src} would both be written to {dst}: process them separately")
        seen[key] = src
        pairs.append((src, dst))
    return pairs


def clip_inputs(pairs: Sequence[tuple[Path, Path]], opts: ClipOptions, style: StyleConfig, model: ModelConfig, *,
                batch: bool, inputs: Sequence[Path] = (),
                replace: Collection[Path] = ()) -> tuple[list[tuple[Path, Path, Size]], list[tuple[Path, InputError]]]:
    """``stylecam clip`` (after :func:`plan_outputs`): each input probed in its range, each output checked (never one
    of the batch's inputs nor of ``inputs``, the other files the command reads, even with ``--overwrite``), the face
    model and the models. One input: its error is raised. A batch: the files that pass with their display sizes, and
    those that fail with their errors (each reported on its own line, the others go on). ``replace``: outputs that may
    be replaced without ``--overwrite`` (a resumable batch's own earlier outputs, :mod:`realtime.pipeline.manifest`)."""
    read = (*(src for src, _ in pairs), *inputs)
    good: list[tuple[Path, Path, Size]] = []
    failed: list[tuple[Path, InputError]] = []
    for src, dst in pairs:  # the encoder itself is checked once, before (check_encoder)
        try:
            check_input_file(src)
            check_output_path(dst, overwrite=opts.overwrite or dst in replace, inputs=read)
            size = check_video(src, start=opts.start, end=opts.end)  # an input that is no video: say that first
            codec = check_container(dst, opts.codec)
            if opts.codec is None:
                check_encoder(codec, opts.pix_fmt)
            good.append((src, dst, size))
        except InputError as e:
            if not batch:
                raise
            failed.append((src, e))
    if opts.face:
        face_model(opts.face_model)
    check_style_models(style, model)
    check_region(opts.region, model.segment_model if model is not None else None)
    return good, failed


# ------------------------------------------------------------------------------------------------------ the runner
def open_clip_job(options: ClipOptions, style: StyleConfig, model: ModelConfig, run: RunConfig | None) -> "ClipJob":
    """The models loaded once and the clip job around them: what ``stylecam clip`` runs in its own process and what each
    ``--ray`` worker runs. ``run=None``: no model (the ``none`` style at ``--size auto``: frames cropped straight to each
    output size)."""
    from realtime.diffusion.build import build_stylizer
    from realtime.pipeline.processor import canny_config
    from realtime.vision.edges import EdgeDetector

    from realtime.pipeline.stages import frame_stages

    stylizer = build_stylizer(model, style, run) if run is not None else None
    try:
        background = check_region(options.region, model.segment_model if model is not None else None)
        stages = frame_stages(style, model if stylizer is not None else None, options.region, stylizer=stylizer,
                              background=background, seed=run.seed if run is not None else 0)
        return ClipJob(options, run.size if run is not None else None, stylizer=stylizer,
                       edges=EdgeDetector(canny_config(style)), style=style, **stages)
    except BaseException:
        if stylizer is not None:
            stylizer.close()
        raise


class _BatchDetector:
    """One MediaPipe detector for a whole batch: each file's timestamps are shifted past the previous file's (VIDEO
    mode needs increasing timestamps). ``close()`` is a no-op: :class:`ClipJob` closes the real detector."""

    def __init__(self, detector: Any) -> None:
        self.detector, self.offset, self.last = detector, 0.0, 0.0

    def next_file(self) -> None:
        self.offset = self.last + 1.0

    def detect(self, rgb: np.ndarray, timestamp_s: float) -> list[Any]:
        t = float(timestamp_s) + self.offset
        self.last = max(self.last, t)
        return self.detector.detect(rgb, t)

    def close(self) -> None:
        pass


class ClipJob:
    """The models, loaded once, and the per-file loop.

    ``stylizer``: a :class:`~realtime.diffusion.stylizer.Stylizer` or ``None`` (pass-through); ``model_size``: the size it runs
    at (every file is framed in this aspect ratio); ``None`` only without a stylizer: frames are cropped straight to
    each file's output size, as live does for the ``none`` style. ``edges``: the Canny stage. ``style``: its temporal
    settings turn on the similarity filter as in live. With ``options.face`` a face detector is created here (bad or
    missing face model: a one-line error before any file). :meth:`process` does one file; :meth:`close` releases
    everything (the stylizer included).
    """

    def __init__(self, options: ClipOptions, model_size: Size | None, *, stylizer: Any | None = None,
                 edges: Any | None = None, style: Any | None = None, control_maps: Any | None = None,
                 regions: Any | None = None) -> None:
        from realtime.vision.edges import EdgeDetector

        if model_size is None and stylizer is not None:
            raise UsageError("ClipJob: a stylizer needs its model size")
        self.options, self.model_size, self.stylizer, self.style = options, model_size, stylizer, style
        self.control_maps, self.regions = control_maps, regions  # pose/depth maps, region compositing: kept per job
        self.edges = edges or EdgeDetector()
        self._detector: _BatchDetector | None = None
        if options.face:
            from realtime.vision.face import FaceDetector
            from realtime.vision.framing import FramingConfig

            det = FaceDetector(face_model(options.face_model), min_detection_confidence=FramingConfig().min_score)
            self._detector = _BatchDetector(det)

    # -- one file
    def process(self, src: Path, dst: Path, *, overwrite: bool | None = None, segment: Segment | None = None,
                on_frame: Callable[[int], None] | None = None) -> ClipResult:
        """Stylize ``src`` into ``dst``. Nothing is left at ``dst`` (nor a temporary file) unless it succeeds.

        ``overwrite``: replace an existing ``dst`` (``None``: ``options.overwrite``). ``segment``: write only that part
        of the clip (:func:`realtime.io.segments.plan_segments`): its warm-up frames are stylized and dropped, the
        frames keep the whole output's timestamps, no audio (the join adds it once), no B-frames. ``on_frame(n)``:
        called after each written frame with the count so far (progress; raising there stops the clip cleanly)."""
        from realtime.io.videowriter import VideoFileSink
        from realtime.io.videofile import FileSource

        o = self.options
        overwrite = o.overwrite if overwrite is None else overwrite
        check_input_file(src)
        check_output_path(dst, overwrite=overwrite, inputs=(src,))
        start, end = (o.start, o.end) if segment is None else (segment.decode_from, segment.end)
        with FileSource(src, start=start, end=end, queue_size=o.queue_size) as source:
            out_size = self._output_size(source.size, src)
            work = self.model_size or out_size
            if work != out_size and abs(np.log(out_size.aspect / work.aspect)) > 0.05:
                log.info("%s: output %s framed through a %s model window (cropped to fill; --size sets the model size)",
                         src.name, out_size, work)
            framer = self._framer(source.size, work.aspect)
            audio = source.has_audio and segment is None
            try:
                sink = VideoFileSink(
                    dst, out_size.width, out_size.height, source.fps, codec=o.codec, crf=o.crf, pix_fmt=o.pix_fmt,
                    overwrite=overwrite, time_base=source.time_base, audio_from=src if audio else None,
                    audio_start=o.start, audio_end=o.end,
                    options=dict(SEGMENT_ENCODER_OPTIONS) if segment is not None else None,
                )
                try:
                    return self._run(source, sink, framer, (src, dst), work, out_size, segment, on_frame)
                except BaseException as e:
                    sink.abort()
                    why = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                    log.warning("%s %s: %s not written, no partial or temporary file left", src.name, why, dst)
                    raise
            finally:
                if framer is not None:
                    framer.close()

    def _output_size(self, frame: Size, src: Path) -> Size:
        out = self.options.output_size
        if out is None:
            out = frame
            if self.options.pix_fmt.startswith(_SUBSAMPLED) and (out.width % 2 or out.height % 2):
                out = Size(max(out.width - out.width % 2, 2), max(out.height - out.height % 2, 2))
                log.info("%s: %s needs even sides, writing %s (the input is %s)", src.name, self.options.pix_fmt, out, frame)
        return out

    def _framer(self, frame: Size, aspect: float) -> Any | None:
        if self._detector is None:
            return None
        from realtime.vision.face import FaceFramer
        from realtime.vision.framing import FramingConfig

        self._detector.next_file()
        return FaceFramer(FramingConfig(), frame, aspect, detector=self._detector)

    def _run(self, source: Any, sink: Any, framer: Any | None, paths: tuple[Path, Path], work: Size, out_size: Size,
             segment: Segment | None, on_frame: Callable[[int], None] | None) -> ClipResult:
        from realtime.pipeline.processor import FrameProcessor
        from realtime.pipeline.temporal import SimilarityFilter

        src, dst = paths
        temporal = getattr(self.style, "temporal", None)
        similarity = SimilarityFilter.from_config(temporal) if temporal is not None and self.stylizer else None
        proc = FrameProcessor(work, out_size, stylizer=self.stylizer, edges=self.edges, framer=framer,
                              similarity=similarity, style=self.style, control_maps=self.control_maps,
                              regions=self.regions)
        if self.regions is not None:
            self.regions.reset()  # a new clip: its first mask is not smoothed with the last clip's
        if self.stylizer is not None:
            self.stylizer.reset()  # a new clip: its first frame is not blended with the last one's
        clock = _Timeline(source.pts_offset if segment is None else segment.pts_offset)
        first_pts = segment.first_pts if segment is not None else None
        frames = face_frames = 0
        prev: np.ndarray | None = None
        t0 = time.perf_counter()
        total = segment.frames if segment is not None else source.frame_count
        with progress_bar(src.name, total, enabled=self.options.progress) as bar:
            while True:
                ta = time.perf_counter()
                frame = source.read()
                proc.times.add("decode wait", (time.perf_counter() - ta) * 1e3)
                if frame is None:
                    break
                if frame.repeat and prev is not None:
                    out = prev  # an undecodable frame: repeat the previous output, timing kept
                else:
                    out = proc.process(frame.image, frame.timestamp)
                    if framer is not None and framer.tracker.tracked is not None:
                        face_frames += 1
                prev = out
                if first_pts is not None and frame.pts is not None and frame.pts < first_pts:
                    continue  # a warm-up frame of a segment: its state counts, the picture belongs to the segment before
                pts = clock.place(frame.pts, frame.duration)
                tb = time.perf_counter()
                sink.send(out, None if pts is not None else frame.timestamp, pts=pts, duration=frame.duration)
                proc.times.add("encode", (time.perf_counter() - tb) * 1e3)
                frames += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame(frames)
            bar.total = frames
            bar.refresh()
        tc = time.perf_counter()
        sink.close()  # flush the encoder, finish the audio, rename into place
        times = proc.times  # the flush belongs to the frames' encoding: add it to the total, not as one more frame
        times.totals["encode"] = times.totals.get("encode", 0.0) + (time.perf_counter() - tc) * 1e3
        wall = time.perf_counter() - t0
        bad = source.stats.bad_frames
        video_s = clock.seconds(source.time_base) if clock.last is not None else frames / source.fps
        result = ClipResult(src, dst, out_size, frames, bad, face_frames, video_s, wall, proc.times.means(),
                            skipped=proc.skipped)
        _log_result(result, framer is not None, proc.skipped)
        log.debug("%s stage means: %s", src.name, proc.times.summary())
        return result

    def close(self) -> None:
        if self._detector is not None:
            self._detector.detector.close()
            self._detector = None
        if self.stylizer is not None:
            self.stylizer.close()
            self.stylizer = None
        for stage in (self.control_maps, self.regions):
            if stage is not None:
                stage.close()
        self.control_maps = self.regions = None
        self.edges.close()

    def __enter__(self) -> "ClipJob":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Timeline:
    """Output timestamps from input ones: ``pts - offset``, never below 0, always increasing (a broken input's
    repeated timestamps are nudged forward). ``end`` is where the last frame placed ends."""

    def __init__(self, offset: int) -> None:
        self.offset, self.end = offset, 0
        self.last: int | None = None

    def place(self, pts: int | None, duration: int | None) -> int | None:
        if pts is None:
            return None
        out = max(pts - self.offset, 0)
        if self.last is not None and out <= self.last:
            out = self.last + 1
        self.last, self.end = out, out + (duration or 0)
        return out

    def seconds(self, time_base: Fraction) -> float:
        return float(self.end * time_base)


def _log_result(result: ClipResult, framed: bool, skipped: int) -> None:
    faces = f", face framed in {result.face_frames} of them" if framed else ""
    bads = f", {result.bad_frames} undecodable frame(s) replaced by the previous one" if result.bad_frames else ""
    bads += f", {skipped} similar frame(s) reused the previous stylized one" if skipped else ""
    log.info("%s -> %s: %d frames (%.2f s, %s) in %.1f s, %.1f fps%s%s", result.input.name, result.output, result.frames,
             result.video_seconds, result.size, result.wall_seconds, result.fps, faces, bads)


# frames done / total, elapsed < ETA, always as frames per second (tqdm's default flips to s/frame when slow)
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


@contextlib.contextmanager
def progress_bar(name: str, total: int, *, enabled: bool) -> Iterator[Any]:
    """A tqdm bar on stderr with log lines routed around it; disabled, a bar that does nothing."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(total=total or None, desc=name, unit=" frames", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
              bar_format=_BAR_FORMAT, disable=not enabled) as bar:
        if not enabled:
            yield bar
            return
        with logging_redirect_tqdm():
            yield bar
