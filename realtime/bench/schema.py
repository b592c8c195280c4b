"""The versioned JSON format of ``stylecam bench`` results: schema, validator, atomic writer and reader.

:data:`SCHEMA` is a JSON Schema (draft 2020-12) as a Python dict (``stylecam bench schema`` prints it). :func:`validate`
uses the ``jsonschema`` package when it is installed and otherwise a small validator of the keywords this schema uses
(``type``, ``properties``, ``required``, ``items``, ``enum``, ``const``, ``minimum``, ``minItems``, ``anyOf``). Bump
:data:`SCHEMA_VERSION` on any change that an older reader would misread; readers refuse newer versions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from realtime.bench.stats import STAGES
from realtime.errors import BadInputFile, InputNotFound, OutputError
from realtime.files import write_text_atomic

SCHEMA_VERSION = 2
#: versions this reader accepts. 2 added ``live.host_critical``, ``live.device_step``, ``memory.build`` and
#: ``memory.gpu_peak_mb`` and changed ``live.added_latency`` to latency minus the device step (was: minus the whole
#: stylizer call); version 1 files stay readable.
READABLE_VERSIONS = (1, 2)
KINDS = ("stylecam-bench", "streamdiffusion-compare")
MODES = ("step", "pipeline", "live", "switch")

_NUM = {"type": "number", "minimum": 0}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_INT0 = {"type": "integer", "minimum": 0}
_INT1 = {"type": "integer", "minimum": 1}
_SUMMARY_KEYS = ("n", "mean_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")

SUMMARY: dict[str, Any] = {
    "type": "object",
    "required": list(_SUMMARY_KEYS),
    "properties": {"n": _INT1, **{k: _NUM for k in _SUMMARY_KEYS[1:]}},
}
SIZE: dict[str, Any] = {"type": "object", "required": ["width", "height"], "properties": {"width": _INT1, "height": _INT1}}
_STAGE_COMMON = {"name": {"enum": list(STAGES)}, "unit": {"const": "ms"}, "parent": _STR_OR_NULL}
STAGE: dict[str, Any] = {
    "anyOf": [
        {"type": "object", "required": ["name", "unit", "parent", "status", "timer", *_SUMMARY_KEYS],
         "properties": {**_STAGE_COMMON, "status": {"const": "ok"}, "timer": {"enum": ["cuda_event", "perf_counter"]},
                        "impl": {"type": "string"}, **SUMMARY["properties"]}},
        {"type": "object", "required": ["name", "unit", "parent", "status", "reason"],
         "properties": {**_STAGE_COMMON, "status": {"const": "skipped"}, "reason": {"type": "string"}}},
    ]
}
_MEMORY_KEYS = ("gpu_allocated_start_mb", "gpu_allocated_peak_mb", "gpu_reserved_peak_mb", "gpu_device_used_start_mb",
                "gpu_device_used_peak_mb", "gpu_device_total_mb", "rss_peak_mb")
_BUILD_KEYS = ("seconds", "gpu_allocated_peak_mb", "gpu_device_used_peak_mb", "rss_peak_mb")
BUILD_MEMORY: dict[str, Any] = {
    "type": "object", "required": list(_BUILD_KEYS),
    "properties": {"seconds": _NUM, **{k: _NUM_OR_NULL for k in _BUILD_KEYS[1:]}},
}
MEMORY: dict[str, Any] = {
    "type": "object", "required": list(_MEMORY_KEYS),
    "properties": {**{k: _NUM_OR_NULL for k in _MEMORY_KEYS}, "gpu_peak_mb": _NUM_OR_NULL,
                   "build": {"anyOf": [{"type": "null"}, BUILD_MEMORY]}},
}
_SUMMARY_OR_NULL = {"anyOf": [{"type": "null"}, SUMMARY]}
LIVE: dict[str, Any] = {
    "type": "object",
    "required": ["target_fps", "achieved_fps", "frames_out", "frames_captured", "dropped", "latency", "added_latency"],
    "properties": {
        "target_fps": _NUM, "achieved_fps": _NUM, "frames_out": _INT0, "frames_captured": _INT0, "dropped": _INT0,
        "latency": SUMMARY, "added_latency": _SUMMARY_OR_NULL, "host_critical": _SUMMARY_OR_NULL,
        "device_step": _SUMMARY_OR_NULL,
    },
}
SWITCH: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "command", "applied", "frames_to_visible", "stall_ms", "frame_period_ms", "extra_memory_mb",
                 "lora_touched_mb", "apply_ms"],
    "properties": {
        "kind": {"type": "string"}, "command": {"type": "string"}, "applied": {"type": "boolean"},
        "frames_to_visible": {"type": ["integer", "null"], "minimum": 1}, "stall_ms": _NUM, "frame_period_ms": _NUM,
        "extra_memory_mb": _NUM, "lora_touched_mb": _NUM, "apply_ms": {"type": ["number", "null"], "minimum": 0},
    },
}
RUN: dict[str, Any] = {
    "type": "object",
    "required": ["mode", "system", "label", "size", "backend", "backend_used", "device", "dtype", "batch", "warmup",
                 "frames", "frame", "fps", "stages", "memory", "live", "notes"],
    "properties": {
        "mode": {"enum": list(MODES)},
        "system": {"enum": ["stylecam", "streamdiffusion"]},
        "label": {"type": "string"},
        "size": SIZE,
        "backend": {"type": "string"},
        "backend_used": {"type": "string"},
        "backend_reason": _STR_OR_NULL,
        "device": {"type": "string"},
        "dtype": {"type": "string"},
        "batch": _INT1,
        "warmup": _INT0,
        "frames": _INT1,
        "frame": SUMMARY,
        "fps": _NUM,
        "fps_p50": _NUM,
        "stages": {"type": "array", "items": STAGE},
        "memory": MEMORY,
        "live": {"anyOf": [{"type": "null"}, LIVE]},
        "notes": {"type": "array", "items": {"type": "string"}},
        "switches": {"type": "array", "items": SWITCH},  # --mode switch only (realtime/bench/switch.py)
    },
}
ENVIRONMENT: dict[str, Any] = {
    "type": "object",
    "required": ["date", "os", "python", "cpu", "device", "gpu", "versions", "git"],
    "properties": {
        "date": {"type": "string"},
        "host": _STR_OR_NULL,
        "os": {"type": "string"},
        "python": {"type": "string"},
        "cpu": {"type": "object", "required": ["model", "logical_cores"],
                "properties": {"model": _STR_OR_NULL, "logical_cores": {"type": ["integer", "null"]}}},
        "device": {"type": "string"},
        "gpu": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["name", "compute_capability", "driver", "cuda_runtime", "memory_total_mb"],
            "properties": {"name": {"type": "string"}, "compute_capability": {"type": "string"},
                           "driver": _STR_OR_NULL, "cuda_runtime": _STR_OR_NULL, "memory_total_mb": _NUM}}]},
        "versions": {"type": "object", "required": ["torch", "diffusers", "transformers", "onnxruntime", "tensorrt"],
                     "properties": {k: _STR_OR_NULL for k in ("torch", "diffusers", "transformers", "onnxruntime", "tensorrt")}},
        "git": {"type": "object", "required": ["commit"], "properties": {"commit": {"type": "string"}}},
    },
}
SETTINGS: dict[str, Any] = {
    "type": "object",
    "required": ["modes", "sizes", "backends", "batch", "frames", "warmup", "source", "model", "style", "device",
                 "dtype", "seed"],
    "properties": {
        "modes": {"type": "array", "items": {"enum": list(MODES)}},
        "sizes": {"type": "array", "minItems": 1, "items": SIZE},
        "backends": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "batch": _INT1, "frames": _INT1, "warmup": _INT0,
        "source": {"type": "string"},
        "model": {"type": "object", "required": ["model", "controlnet", "vae"]},
        "style": {"type": "object", "required": ["name"]},
        "device": {"type": "string"}, "dtype": {"type": "string"}, "seed": _INT0,
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "stylecam bench result",
    "type": "object",
    "required": ["schema_version", "kind", "label", "tool", "command", "settings", "environment", "runs", "notes"],
    "properties": {
        "schema_version": {"enum": list(READABLE_VERSIONS)},
        "kind": {"enum": list(KINDS)},
        "label": _STR_OR_NULL,
        "tool": {"type": "object", "required": ["name", "version"],
                 "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
        "command": {"type": "string"},
        "settings": SETTINGS,
        "environment": ENVIRONMENT,
        "runs": {"type": "array", "minItems": 1, "items": RUN},
        "comparison": {"type": "object"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


class BenchSchemaError(BadInputFile):
    """A result document that does not match :data:`SCHEMA` (the message names the first wrong field)."""


# -------------------------------------------------------------------------------------------------------- validator
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Every violation of ``schema`` by ``value`` as ``path: what`` (the subset of JSON Schema used here)."""
    where = path or "(document)"
    if "anyOf" in schema:
        branches = [_errors(value, s, path) for s in schema["anyOf"]]
        if all(branches):
            # The most telling branch: one whose type fits the value, then the one with the fewest complaints.
            def rank(i: int) -> tuple[int, int]:
                t = schema["anyOf"][i].get("type")
                fits = t is None or any(_TYPES[x](value) for x in (t if isinstance(t, list) else [t]))
                return (0 if fits else 1, len(branches[i]))

            best = branches[min(range(len(branches)), key=rank)]
            return best if len(best) == 1 else [f"{where}: matches none of the allowed forms ({best[0]})"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: expected {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {', '.join(map(repr, schema['enum']))}"]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"]
    errs: list[str] = []
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        errs.append(f"{where}: {value!r} is below the minimum {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errs.append(f"{where}: missing required field {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errs.extend(_errors(value[key], sub, f"{path}.{key}" if path else key))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errs.append(f"{where}: needs at least {schema['minItems']} item(s), has {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                errs.extend(_errors(item, schema["items"], f"{path}[{i}]"))
    return errs


def validate(doc: Any, *, use_jsonschema: bool | None = None) -> None:
    """Raise :class:`BenchSchemaError` when ``doc`` does not match :data:`SCHEMA`. ``use_jsonschema``: None = the
    ``jsonschema`` package when installed, else the built-in validator; True/False forces one."""
    if isinstance(doc, dict) and isinstance(doc.get("schema_version"), int) and doc["schema_version"] > SCHEMA_VERSION:
        raise BenchSchemaError(
            f"bench result has schema_version {doc['schema_version']}, newer than this stylecam reads "
            f"({SCHEMA_VERSION}): upgrade stylecam"
        )
    if use_jsonschema is None or use_jsonschema:
        try:
            import jsonschema
        except ImportError:
            if use_jsonschema:
                raise
            jsonschema = None
        if jsonschema is not None:
            try:
                jsonschema.validate(doc, SCHEMA)
            except jsonschema.ValidationError as e:
                # The same message as without jsonschema where the built-in validator finds the fault too.
                errs = _errors(doc, SCHEMA, "")
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
                first = errs[0] if errs else f"{where or '(document)'}: {e.message}"
                raise BenchSchemaError(f"bench result does not match schema {SCHEMA_VERSION}: {first}") from e
            return
    errs = _errors(doc, SCHEMA, "")
    if errs:
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise BenchSchemaError(f"bench result does not match schema {SCHEMA_VERSION}: {errs[0]}{more}")


# ---------------------------------------------------------------------------------------------------------- files
def write_json_atomic(path: str | os.PathLike[str], doc: Any, *, overwrite: bool = False) -> Path:
    """Write ``doc`` as indented JSON to ``path`` through a temporary file in the same directory, renamed over the
    target only when complete (nothing half-written is ever left, Ctrl-C included)."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if target.is_dir():
        raise OutputError(f"output {target} is a directory: give a file name")
    if target.exists() and not overwrite:
        raise OutputError(f"output {target} exists: pass --overwrite to replace it")
    text = json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_text_atomic(target, text)
    return target


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate one result file (one-line errors naming the file)."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFound(f"bench result not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputFile(f"{p}: not a readable JSON file ({e})") from e
    try:
        validate(doc)
    except BenchSchemaError as e:
        raise BenchSchemaError(f"{p}: {e}") from e
    return doc
