"""Runtime control of `stylecam live`: command lines, the control file, window keys, the session's rules (styles,
LoRAs, guidance, temporal settings), bypass/blank/mirror/framing, and changes applied mid-run within a frame or two
(the loop driven programmatically on a small clip with a random:tiny stylizer)."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from live_clips import ScriptedCommands, make_face_clip
from realtime.cli import build_parser
from realtime.pipeline.controls import Command, ControlFile, StdinCommands, key_command, parse_command, read_control_file
from realtime.config import LoraSpec, StyleConfig, load_style
from realtime.errors import UsageError
from realtime.geometry import Size
from realtime.pipeline.live import LiveLoop, close_all
from realtime.cli.live_setup import build_live
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.session import LiveSession
from realtime.io.sinks import KEY_ACTIONS

TINY = ["--model", "random:tiny", "--size", "64x64", "--output-size", "128x96", "--no-stdin", "--output", "none"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    return make_face_clip(tmp_path_factory.mktemp("ctl") / "clip.mp4", astronaut, n=16)


# ------------------------------------------------------------------------------------------------- command lines
@pytest.mark.parametrize("line, name, value", [
    ("style cel-shaded", "style", "cel-shaded"), ("next", "style", "next"), ("prev", "style", "prev"),
    ("prompt a watercolor portrait # not a comment", "prompt", "a watercolor portrait # not a comment"),
    ("negative blurry", "negative", "blurry"), ("strength 0.6", "strength", 0.6), ("control 0.8", "control", 0.8),
    ("control-scale 1.2", "control", 1.2), ("guidance 2", "guidance", 2.0), ("seed 3", "seed", 3),
    ("blend 0.5", "blend", 0.5), ("blend off", "blend", False), ("blend", "blend", None),
    ("similarity 0.97", "similarity", 0.97), ("similarity on", "similarity", True), ("max-skips 4", "max-skips", 4),
    ("motion-threshold 0.3", "motion-threshold", 0.3), ("motion-adaptive off", "motion-adaptive", False),
    ("bypass", "bypass", None), ("blank on", "blank", True), ("MIRROR off", "mirror", False),
    ("framing", "framing", None), ("overlay", "overlay", None), ("stats", "stats", None), ("q", "quit", None),
    ("quit  # bye", "quit", None), ("lora none", "lora", ()), ("lora OFF", "lora", ()),
    ("lora a.safetensors:0.8 owner/repo/b.safetensors", "lora",
     (LoraSpec("a.safetensors", 0.8), LoraSpec("owner/repo/b.safetensors", 1.0))),
])
def test_parse_command(line: str, name: str, value) -> None:
    cmd = parse_command(line)
    assert cmd is not None and (cmd.name, cmd.value) == (name, value)


@pytest.mark.parametrize("line, needle", [
    ("dance", "unknown command"), ("strength high", "expected a number"), ("seed 1.5", "integer"),
    ("mirror maybe", "on or off"), ("prompt", "needs a text"), ("strength", "needs a value"), ("quit now", "no value"),
    ("lora", "needs a value"), ("lora a.safetensors:99", "scale"),
])
def test_bad_command_lines_are_one_line_errors(line: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as e:
        parse_command(line)
    assert "\n" not in str(e.value)


def test_blank_lines_comments_and_window_keys() -> None:
    assert parse_command("   ") is None and parse_command("# nothing") is None
    for key, action in KEY_ACTIONS.items():
        cmd = key_command(action)
        assert cmd is not None and cmd.source == "window", key
    assert key_command("next_style") == Command("style", "next", "window")
    assert key_command("nonsense") is None


def test_stdin_reader_queues_commands_and_skips_bad_lines(caplog: pytest.LogCaptureFixture) -> None:
    reader = StdinCommands(io.StringIO("strength 0.5\nbogus\n\nstyle watercolor\n"))
    reader._thread.join(5)
    cmds = reader.poll()
    assert [(c.name, c.value, c.source) for c in cmds] == [("strength", 0.5, "stdin"), ("style", "watercolor", "stdin")]
    assert "unknown command 'bogus'" in caplog.text
    assert reader.poll() == []


# ------------------------------------------------------------------------------------------------- control file
def test_control_file_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "live.toml"
    toml.write_text('strength = 0.6\nstyle = "cel-shaded"\nbypass = false\n[temporal]\nblend = 0.5\nmax_skips = 3\n')
    cmds = read_control_file(toml)
    assert [(c.name, c.value) for c in cmds] == [("style", "cel-shaded"), ("strength", 0.6), ("blend", 0.5),
                                                 ("max-skips", 3), ("bypass", False)]
    js = tmp_path / "live.json"
    js.write_text(json.dumps({"prompt": "oil painting", "seed": 4, "similarity_filter": True,
                              "similarity_threshold": 0.99}))
    assert [(c.name, c.value) for c in read_control_file(js)] == [("prompt", "oil painting"), ("seed", 4),
                                                                  ("similarity", True), ("similarity", 0.99)]
    toml.write_text('lora = ["a.safetensors:0.5", "b.safetensors"]\nstyle = "anime"\n')
    assert [(c.name, c.value) for c in read_control_file(toml)] == [
        ("style", "anime"), ("lora", (LoraSpec("a.safetensors", 0.5), LoraSpec("b.safetensors")))]
    toml.write_text('lora = "none"\n')
    assert [(c.name, c.value) for c in read_control_file(toml)] == [("lora", ())]
    for text, needle in (('strenght = 0.5', "unknown key"), ("lora = 3", "list of strings"), ('strength = "high"', "number"), ("seed = 1.5", "integer"),
                         ("mirror = 1", "true or false"), ("[[x", "TOML")):
        toml.write_text(text)
        with pytest.raises(UsageError, match=needle):
            read_control_file(toml)


def test_control_file_is_reread_when_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ctl.toml"
    watch = ControlFile(path, interval_s=0)
    assert watch.poll() == []  # not there yet
    path.write_text("strength = 0.6\n")
    assert [c.value for c in watch.poll()] == [0.6]
    assert watch.poll() == []  # unchanged: nothing
    path.write_text("strength = 0.65\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert [c.value for c in watch.poll()] == [0.65]
    path.write_text("strength = [\n")
    assert watch.poll() == [] and "ignored" in caplog.text  # invalid: logged, the run goes on
    with pytest.raises(UsageError):
        ControlFile(path, interval_s=-1)
    with pytest.raises(OSError, match="does not exist"):
        ControlFile(tmp_path / "missing" / "ctl.toml")


# ------------------------------------------------------------------------------------------------- the session
class RecordingStylizer:
    """Remembers what the session did to it; inverts frames."""

    def __init__(self, style: StyleConfig) -> None:
        self.style, self.seeds, self.resets, self.encoded = style, [], 0, []

    def __call__(self, image, control):
        return 255 - image

    def set_style(self, style: StyleConfig, *, wait: bool = False) -> None:
        self.style = style

    loras = None  # no LoRA switcher: LoRA changes are refused

    def set_seed(self, seed: int, blend=None) -> None:
        self.seeds.append(seed if blend is None else (seed, blend))

    def reset(self) -> None:
        self.resets += 1

    def conditioning(self, style: StyleConfig):
        self.encoded.append((style.prompt, style.uses_cfg))
        return None

    def close(self) -> None:
        pass


def _session(style: StyleConfig | None = None, **kw) -> tuple[LiveSession, FrameProcessor, RecordingStylizer]:
    style = style or load_style("anime")
    s = RecordingStylizer(style)
    proc = FrameProcessor(Size(64, 64), Size(64, 64), stylizer=s, style=style)
    return LiveSession(proc, style, **kw), proc, s


def _wait_pending(session: LiveSession) -> None:
    for _ in range(500):
        session.tick()
        if session.pending_style is None:
            return
        time.sleep(0.01)
    raise AssertionError("the pending style was never switched in")


def test_session_style_numbers_and_presets() -> None:
    session, proc, s = _session(temporal_overrides={"similarity_filter": True, "max_skips": 2})
    assert session.apply(Command("strength", 0.55)) and s.style.strength == 0.55
    assert session.apply(Command("control", 1.3)) and s.style.control_scale == 1.3
    assert session.apply(Command("prompt", "an oil painting")) and s.style.prompt == "an oil painting"
    assert session.apply(Command("style", "cel-shaded"))
    # A preset switch keeps the session's temporal settings (command line) and uses the preset's own Canny thresholds.
    assert s.style.name == "cel-shaded" and s.style.temporal.similarity_filter and s.style.temporal.max_skips == 2
    assert proc.edges.cfg.low == 60 and proc.similarity is not None
    assert session.apply(Command("style", "next")) and s.style.name != "cel-shaded"
    assert session.apply(Command("style", "prev")) and s.style.name == "cel-shaded"
    assert not session.apply(Command("strength", 1.5))  # invalid: logged, nothing changes
    assert not session.apply(Command("style", "nope"))
    assert s.style.name == "cel-shaded"
    assert session.apply(Command("seed", 9)) and s.seeds == [9]


def test_session_blending_toggle_and_temporal_settings() -> None:
    session, proc, s = _session()
    assert s.style.temporal.blend == 0.6
    session.apply(Command("blend"))
    assert s.style.temporal.blend == 1.0
    session.apply(Command("blend"))
    assert s.style.temporal.blend == 0.6
    session.apply(Command("blend", False))
    session.apply(Command("blend", False))
    assert s.style.temporal.blend == 1.0
    session.apply(Command("blend", 0.4))
    session.apply(Command("motion-threshold", 0.5))
    session.apply(Command("motion-adaptive", False))
    t = s.style.temporal
    assert (t.blend, t.motion_threshold, t.motion_adaptive) == (0.4, 0.5, False)
    session.apply(Command("similarity", 0.97))
    assert proc.similarity is not None and proc.similarity.threshold == 0.97
    session.apply(Command("similarity", False))
    assert proc.similarity is None
    session.apply(Command("style", "watercolor"))  # the blend set while running comes along
    assert s.style.temporal.blend == 0.4 and s.style.temporal.motion_threshold == 0.5


def test_session_without_a_switcher_refuses_lora_changes_and_needs_a_model_for_diffusion() -> None:
    with_lora = dataclasses.replace(load_style("anime"), loras=(LoraSpec("a.safetensors", 0.8),))
    session, proc, s = _session(with_lora)
    assert session.apply(Command("style", "watercolor"))  # the preset has no LoRA: the running one is kept
    assert s.style.loras == with_lora.loras
    assert session.apply(Command("style", "none")) and session.apply(Command("style", "anime"))  # via pass-through
    assert s.style.loras == with_lora.loras and not proc.passthrough
    assert not session.apply(Command("lora", ()))  # no way to switch LoRAs: refused, nothing changes
    assert session.style.loras == with_lora.loras and session.pending_style is None
    none_style = load_style("none")
    bare = FrameProcessor(Size(64, 64), Size(64, 64), style=none_style)
    framing_only = LiveSession(bare, none_style)
    for cmd in (Command("style", "anime"), Command("strength", 0.5), Command("seed", 1), Command("style", "next")):
        assert not framing_only.apply(cmd)
    assert framing_only.style.name == "none"


class BlockingSwitcher:
    """A LoRA switcher whose ``prepare`` (file reading) waits for ``release`` and fails for paths with ``fail_on``."""

    def __init__(self, fail_on: str | None = None) -> None:
        import threading

        self.release = threading.Event()
        self.prepared: list[tuple[LoraSpec, ...]] = []
        self.fail_on = fail_on

    def prepare(self, specs):
        from realtime.errors import LoraError

        assert self.release.wait(10)
        if self.fail_on and any(self.fail_on in spec.path for spec in specs):
            raise LoraError(f"LoRA {self.fail_on} does not exist")
        self.prepared.append(tuple(specs))
        return []


def test_lora_change_is_prepared_in_the_background_and_applied_between_frames() -> None:
    session, proc, s = _session()
    s.loras = BlockingSwitcher()
    frame = np.full((64, 64, 3), 30, np.uint8)
    lora = (LoraSpec("ghibli.safetensors", 0.8),)
    assert session.apply(Command("lora", lora))
    assert session.pending_style is not None and session.pending_style.loras == lora
    # Meanwhile the running style keeps stylizing, and a prompt change joins the change being prepared.
    assert session.apply(Command("prompt", "a ghibli portrait"))
    for _ in range(3):
        session.tick()
        assert proc.process(frame)[0, 0, 0] == 225 and s.style.loras == ()
    assert s.style.prompt != "a ghibli portrait"
    s.loras.release.set()
    _wait_pending(session)
    assert proc.stylizer is s and s.style.loras == lora and s.style.prompt == "a ghibli portrait"
    assert s.loras.prepared == [lora] and session.style == s.style
    # New scales for the running LoRAs: one for all; the LoRAs stay with the session across presets.
    assert session.apply(Command("lora-scale", (0.3,)))
    _wait_pending(session)
    assert s.style.loras == (LoraSpec("ghibli.safetensors", 0.3),)
    assert not session.apply(Command("lora-scale", (0.3, 0.4)))  # two scales for one LoRA
    assert session.apply(Command("style", "cel-shaded")) and s.style.name == "cel-shaded"
    assert s.style.loras == (LoraSpec("ghibli.safetensors", 0.3),) and session.pending_style is None
    assert session.apply(Command("lora", ()))
    _wait_pending(session)
    assert s.style.loras == () and s.style.name == "cel-shaded"
    session.close()


def test_failed_or_superseded_lora_changes(caplog: pytest.LogCaptureFixture) -> None:
    session, proc, s = _session()
    s.loras = BlockingSwitcher(fail_on="missing")
    before = s.style
    assert session.apply(Command("lora", (LoraSpec("missing.safetensors"),)))
    s.loras.release.set()
    _wait_pending(session)
    assert "not applied" in caplog.text and "missing" in caplog.text
    assert session.style.loras == () and session.style == before == s.style
    # Two requests in a row: the later one wins.
    s.loras.release.clear()
    session.apply(Command("lora", (LoraSpec("a.safetensors"),)))
    session.apply(Command("lora", (LoraSpec("b.safetensors"),)))
    s.loras.release.set()
    _wait_pending(session)
    assert s.style.loras == (LoraSpec("b.safetensors"),)
    session.close()


def test_lora_a_b_a_on_the_real_stylizer_gives_exactly_a_in_place(tmp_path: Path, tiny_components, astronaut) -> None:
    """Live LoRA switching through the watchdog: the new set is written into the same weights (no second model:
    every parameter keeps its storage, no parameter is added), and going back to A reproduces A byte for byte."""
    import cv2

    from lora_files import write_diffusers_lora, write_kohya_lora
    from realtime.config import ModelConfig, RunConfig
    from realtime.diffusion.build import build_stylizer
    from realtime.pipeline.watchdog import GuardedStylizer

    a = (LoraSpec(str(write_diffusers_lora(tiny_components.unet, tmp_path / "a.safetensors")), 0.8),)
    b = (LoraSpec(str(write_kohya_lora(tiny_components.unet, tmp_path / "b.safetensors")), 1.0),)
    run = RunConfig(size=Size(64, 64), device="cpu", dtype="fp32")
    style_a = dataclasses.replace(load_style("anime"), loras=a)
    raw = build_stylizer(ModelConfig("random:tiny"), style_a, run)
    comps = raw.components
    storage = {n: p.data_ptr() for m in (comps.unet, comps.text_encoder, comps.vae) for n, p in m.named_parameters()}
    frame = cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)
    guard = GuardedStylizer(raw)
    proc = FrameProcessor(Size(64, 64), Size(64, 64), stylizer=guard, style=style_a)
    session = LiveSession(proc, style_a)
    first_a = proc.process(frame)
    for lora, name in ((b, "b"), (a, "a")):
        proc.stylizer.reset().result()
        session.apply(Command("lora", lora))
        _wait_pending(session)
        guard.schedule(lambda: None).result()  # the switch ran on the stylizer's thread
        proc.stylizer.reset().result()
        out = proc.process(frame)
        if name == "b":
            assert np.abs(out.astype(int) - first_a.astype(int)).max() > 0  # B is another look
    assert np.array_equal(out, first_a)  # back to A: exactly A
    after = {n: p.data_ptr() for m in (comps.unet, comps.text_encoder, comps.vae) for n, p in m.named_parameters()}
    assert after == storage  # same parameters, same storage: nothing reallocated, no second model
    session.close()
    proc.close()


def test_guidance_switch_prepares_off_the_frame_path() -> None:
    session, proc, s = _session()
    session.apply(Command("guidance", 3.0))
    assert session.pending_style is not None and s.style.guidance == 1.0  # the old style keeps running meanwhile
    _wait_pending(session)
    assert s.style.guidance == 3.0 and (s.style.prompt, True) in s.encoded


def test_guidance_switch_after_a_prompt_change_on_the_real_stylizer(tiny_components, astronaut) -> None:
    """Regression: a prompt encode still pending from an earlier change must not be swapped in after the step was
    rebuilt for guidance on (its embeddings have the wrong batch)."""
    import cv2

    from realtime.diffusion.stylizer import Stylizer

    anime = load_style("anime")
    st = Stylizer(tiny_components, anime, Size(64, 64), device=torch.device("cpu"), dtype=torch.float32)
    proc = FrameProcessor(Size(64, 64), Size(64, 64), stylizer=st, style=anime)
    frame = cv2.resize(astronaut, (64, 64), interpolation=cv2.INTER_AREA)
    proc.process(frame)
    changed = dataclasses.replace(anime, prompt="a cel shaded comic portrait")
    proc.set_style(changed)
    st._pending.result(timeout=30)  # the encode is done but not yet swapped in (no frame since)
    guided = dataclasses.replace(changed, guidance=2.5)
    st.encode_prompt(guided.prompt, guided.negative_prompt, True)  # what LiveSession prepares in the background
    proc.set_style(guided)
    out = proc.process(frame)  # would raise a size mismatch with the stale embeddings
    assert out.shape == (64, 64, 3) and st.style.guidance == 2.5


def test_switching_to_none_passes_through_and_back_starts_fresh() -> None:
    session, proc, s = _session()
    frame = np.full((64, 64, 3), 30, np.uint8)
    assert proc.process(frame)[0, 0, 0] == 225
    session.apply(Command("style", "none"))
    assert proc.passthrough and proc.process(frame)[0, 0, 0] == 30
    resets = s.resets
    session.apply(Command("style", "anime"))
    assert not proc.passthrough and proc.process(frame)[0, 0, 0] == 225 and s.resets == resets + 1


def test_bypass_blank_mirror_and_framing(astronaut: np.ndarray) -> None:
    from realtime.vision.face import FaceFramer, FramingConfig

    class Det:
        def detect(self, rgb, t):
            return []

        def close(self):
            pass

    session, proc, s = _session()
    proc.framer = FaceFramer(FramingConfig(), Size(512, 512), 1.0, detector=Det())
    proc.framing = True
    frame = np.ascontiguousarray(astronaut[:, :, :])
    stylized = proc.process(frame)
    session.apply(Command("bypass"))
    bypassed = proc.process(frame)
    assert proc.mode == "bypass" and np.array_equal(bypassed, 255 - stylized)  # the framed crop, unstylized
    session.apply(Command("blank"))
    assert proc.mode == "blank" and not proc.process(frame).any()
    resets = s.resets
    session.apply(Command("blank"))
    assert proc.mode == "stylize" and s.resets == resets + 1  # back: no blending with stale latents
    session.apply(Command("mirror"))
    assert proc.mirror and np.array_equal(proc.process(frame), stylized[:, ::-1])  # no face: the whole frame, flipped
    session.apply(Command("mirror", False))
    assert not proc.mirror
    session.apply(Command("framing"))
    assert not proc.framing and not proc.framer.enabled
    session.apply(Command("framing"))
    assert proc.framing and proc.framer.enabled
    session.apply(Command("overlay"))
    assert session.overlay is False
    session.apply(Command("quit"))
    assert session.quit


# ------------------------------------------------------------------------------------------------- mid-run changes
def _run_with(argv: list[str], script: dict[int, list[Command]], frames: int, extra_sources=(), on_frame=None):
    args = build_parser().parse_args(["live", *argv])
    stack = contextlib.ExitStack()
    with stack:
        parts = build_live(args, stack)
        stack.pop_all()
    scripted = ScriptedCommands(script)
    seen: list[StyleConfig] = []

    def record(loop, frame, out):
        seen.append(parts.processor.stylizer.stylizer.style)  # what the stylizer ran this frame with
        if on_frame is not None:
            on_frame(loop, frame, out)

    loop = LiveLoop(parts.source, parts.processor, parts.sinks, parts.session,
                    command_sources=[scripted, *extra_sources], frames=frames, on_frame=record)
    scripted.loop = loop
    try:
        result = loop.run()
    finally:
        close_all(parts.sinks, [parts.source, parts.session, parts.processor])
    return result, seen, parts


def test_commands_mid_run_apply_on_the_next_frame(clip: Path) -> None:
    script = {4: [Command("strength", 0.5, "stdin")], 7: [Command("style", "cel-shaded", "stdin")],
              9: [Command("guidance", 2.0, "stdin")]}
    result, seen, parts = _run_with(["--source", str(clip), "--no-pace", *TINY], script, frames=14)
    assert result.delivered == 14 and parts.processor.passed_through == 0  # no frame failed on the way
    assert [s.strength for s in seen[:4]] == [0.75] * 4 and seen[4].strength == 0.5
    assert seen[6].name == "anime" and seen[7].name == "cel-shaded" and seen[7].strength == 0.8
    # Guidance on rebuilds the step: prepared in the background, so it lands within a few frames, never crashes.
    assert seen[-1].guidance == 2.0 and all(s.guidance == 1.0 for s in seen[:9])


def test_stdin_and_control_file_mid_run(clip: Path, tmp_path: Path) -> None:
    ctl = tmp_path / "live.toml"
    r, w = os.pipe()
    stdin = StdinCommands(os.fdopen(r, "r"))
    writer = os.fdopen(w, "w")

    def drive(loop, frame, out):
        if loop.delivered == 3:  # after frame 3: a command on stdin, waited for until the reader queued it
            writer.write("strength 0.55\n")
            writer.flush()
            for _ in range(1000):
                if stdin.pending:
                    break
                time.sleep(0.005)
        if loop.delivered == 6:  # after frame 6: the control file changes
            ctl.write_text('style = "watercolor"\ncontrol_scale = 0.5\n[temporal]\nblend = 0.45\n')

    argv = ["--source", str(clip), "--no-pace", *TINY, "--control-file", str(ctl)]
    args = build_parser().parse_args(["live", *argv])
    stack = contextlib.ExitStack()
    with stack:
        parts = build_live(args, stack)
        stack.pop_all()
    control = parts.command_sources[0]
    control.interval_s = 0
    seen: list[StyleConfig] = []

    def record(loop, frame, out):
        seen.append(parts.processor.stylizer.stylizer.style)
        drive(loop, frame, out)

    loop = LiveLoop(parts.source, parts.processor, parts.sinks, parts.session, command_sources=[stdin, control],
                    frames=10, on_frame=record)
    try:
        loop.run()
    finally:
        close_all(parts.sinks, [parts.source, parts.session, parts.processor])
        writer.close()
    assert [s.strength for s in seen[:3]] == [0.75] * 3
    assert seen[3].strength == 0.55  # the next frame
    assert seen[5].name == "anime"
    assert seen[6].name == "watercolor" and seen[6].control_scale == 0.5 and seen[6].temporal.blend == 0.45


def test_lora_from_the_control_file_mid_run(clip: Path, tmp_path: Path, tiny_components) -> None:
    """`stylecam live` reads new LoRAs in the background while frames keep flowing, then writes them into the same
    stylizer's weights (no new stylizer, no new parameters)."""
    from lora_files import write_kohya_lora

    lora = write_kohya_lora(tiny_components.unet, tmp_path / "style.safetensors")
    ctl = tmp_path / "live.toml"
    args = build_parser().parse_args(["live", "--source", str(clip), "--no-pace", *TINY, "--control-file", str(ctl)])
    stack = contextlib.ExitStack()
    with stack:
        parts = build_live(args, stack)
        stack.pop_all()
    parts.command_sources[0].interval_s = 0
    first = parts.processor.stylizer.stylizer
    n_params = sum(1 for _ in first.components.unet.parameters())
    seen: list[tuple[object, StyleConfig]] = []

    def on_frame(loop, frame, out):
        raw = parts.processor.stylizer.stylizer
        seen.append((raw, raw.style))
        if loop.delivered == 2:
            ctl.write_text(f'lora = ["{lora}:0.7"]\n')
        if loop.delivered == 4:  # hold the loop until the new stylizer is ready (the next frame swaps it in)
            for _ in range(3000):
                if parts.session.pending_style is None:
                    break
                parts.session.tick()
                time.sleep(0.01)

    loop = LiveLoop(parts.source, parts.processor, parts.sinks, parts.session, command_sources=parts.command_sources,
                    frames=8, on_frame=on_frame)
    try:
        result = loop.run()
    finally:
        close_all(parts.sinks, [parts.source, *parts.command_sources, parts.session, parts.processor])
    assert result.delivered == 8
    assert all(raw is first and st.loras == () for raw, st in seen[:3])  # frames kept flowing with the old one
    raw, st = seen[-1]
    assert raw is first and st.loras == (LoraSpec(str(lora), 0.7),)
    assert sum(1 for _ in first.components.unet.parameters()) == n_params and first.loras.current == st.loras


def test_quit_command_stops_the_loop(clip: Path) -> None:
    result, seen, _ = _run_with(["--source", str(clip), "--no-pace", *TINY], {3: [Command("quit")]}, frames=50)
    assert result.ended == "quit" and result.delivered == 3


class FakeGui:
    """OpenCV HighGUI stand-in: ``keys[k]`` is what waitKey returns while frame ``k`` (0-based) is shown."""

    def __init__(self, keys: dict[int, str]) -> None:
        self.keys, self.shown, self.overlays = keys, -1, []

    def namedWindow(self, *a) -> None:
        pass

    def resizeWindow(self, *a) -> None:
        pass

    def imshow(self, title: str, bgr: np.ndarray) -> None:
        self.shown += 1

    def waitKey(self, ms: int) -> int:
        key = self.keys.pop(self.shown, None)
        return ord(key) if key else -1

    def getWindowProperty(self, *a) -> float:
        return 1.0

    def destroyWindow(self, *a) -> None:
        pass


def test_window_keys_drive_the_session_and_stats_are_logged(clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from realtime.io.sinks import WindowSink

    caplog.set_level(logging.INFO)
    args = build_parser().parse_args(["live", "--source", str(clip), "--no-pace", "--style", "none",
                                      "--output-size", "128x96", "--no-stdin", "--output", "none"])
    stack = contextlib.ExitStack()
    with stack:
        parts = build_live(args, stack)
        stack.pop_all()
    gui = FakeGui({1: "m", 3: " ", 5: " ", 6: "k", 8: "q"})
    window = WindowSink("stylecam", 128, 96, gui=gui)
    overlays: list[list[str]] = []
    window.set_overlay = lambda lines: overlays.append(list(lines or []))  # type: ignore[method-assign]
    modes: list[tuple[str, bool]] = []
    loop = LiveLoop(parts.source, parts.processor, [window], parts.session, stats_every_s=0.0,
                    on_frame=lambda lp, f, o: modes.append((parts.processor.mode, parts.processor.mirror)))
    window.on_key = loop.on_key
    try:
        result = loop.run()
    finally:
        close_all([window], [parts.source, parts.session, parts.processor])
    # A key pressed while frame k is shown is applied before frame k+1.
    assert result.ended == "quit" and result.delivered == 9
    assert modes[1] == ("stylize", False) and modes[2] == ("stylize", True)
    assert modes[4][0] == "bypass" and modes[6][0] == "stylize" and modes[7][0] == "blank"
    assert overlays[0][0].startswith("none") and "fps" in overlays[0][0] and "mirror" in overlays[3][1]
    stats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("in ")]
    assert stats and "out" in stats[0] and "dropped" in stats[0] and "face" in stats[0]
    from realtime.pipeline.live import log_summary

    log_summary(result)  # what `stylecam live` logs at exit
    assert "9 frames delivered" in caplog.text and "fps; quit)" in caplog.text
    assert "per-stage means: face" in caplog.text


class _ConstantMaps:
    """A ControlMapper stand-in: a constant map per control (records the calls)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, control: str, rgb: np.ndarray) -> np.ndarray:
        self.calls.append(control)
        return np.zeros(rgb.shape if control == "pose" else rgb.shape[:2], np.uint8)

    def close(self) -> None:
        pass


def test_a_control_change_loads_in_the_background_while_the_old_controls_keep_flowing() -> None:
    import threading

    release, loaded = threading.Event(), []

    def controls_loader(style: StyleConfig) -> None:  # what stages.controls_loader does: ControlNets, detectors
        assert release.wait(10)
        loaded.append(style.controls)

    session, proc, stylizer = _session(controls_loader=controls_loader)
    proc.control_maps = maps = _ConstantMaps()
    frame = np.full((64, 64, 3), 30, np.uint8)
    assert session.apply(Command("controls", "depth,canny"))
    assert session.pending_style is not None and session.pending_style.controls == ("canny", "depth")
    for _ in range(3):  # meanwhile: the running stylizer, with its one control
        session.tick()
        assert proc.process(frame)[0, 0, 0] == 225 and stylizer.style.controls == ("canny",)
    assert maps.calls == [] and loaded == []
    release.set()
    _wait_pending(session)
    assert loaded == [("canny", "depth")] and stylizer.style.controls == ("canny", "depth")
    proc.process(frame)
    assert maps.calls == ["depth"]  # the new control's map is made for every frame now
    assert not session.apply(Command("controls", "canny,hed"))  # a bad list: refused, logged, nothing changes
    assert session.style.controls == ("canny", "depth")
    without = _session()[0]  # no loader (no model to load from): refused with the fix
    assert not without.apply(Command("controls", "canny,pose"))


def test_region_and_background_commands_and_keys(tmp_path) -> None:
    from realtime.config import RegionConfig
    from realtime.vision.regions import RegionCompositor

    class Half:
        def mask(self, rgb, t):
            m = np.zeros(rgb.shape[:2], np.float32)
            m[:, :32] = 1
            return m

        def close(self):
            pass

    session, proc, _ = _session()
    proc.regions = RegionCompositor(RegionConfig(), Half())
    frame = np.full((64, 64, 3), 30, np.uint8)
    assert session.apply(parse_command("region person")) and proc.region.region == "person"
    out = proc.process(frame)
    assert out[0, 0, 0] == 225 and out[0, 63, 0] == 30  # the person stylized, the background the camera's own
    assert session.apply(parse_command("background blur")) and proc.region.background == "blur"
    bad = tmp_path / "beach.jpg"
    bad.write_text("not an image")
    assert not session.apply(parse_command(f"background {bad}"))  # refused with its reason; nothing changes
    assert proc.region.background == "blur"
    assert session.apply(key_command(KEY_ACTIONS["g"])) and proc.region.background == "keep"  # g: blur <-> keep
    assert session.apply(key_command(KEY_ACTIONS["r"])) and proc.region.region == "background"  # r: the next region
    assert proc.process(frame)[0, 63, 0] == 225
    assert session.apply(key_command(KEY_ACTIONS["r"])) and proc.region.region == "all"
    assert not session.apply(parse_command("background blur"))  # only with region person
