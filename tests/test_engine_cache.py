"""engines/cache.py: key hashing, manifests, atomic writes, corruption and version checks, listing and clearing."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath, PureWindowsPath

import pytest
import torch
from engine_toys import INPUT_NAMES, OUTPUT_NAMES, toy, toy_inputs

from engines import CacheDirError, EngineCache, EngineOptionError, EngineOptions, build_runner, cache_key
from engines.cache import default_cache_root, environment_fields, user_cache_dir, versions_of

FIELDS = {
    "model": "stabilityai/sd-turbo", "revision": "abc123", "controlnet": "thibaud/controlnet-sd21-canny-diffusers",
    "vae": "madebyollin/taesd", "loras": [{"sha256": "ff00", "scale": 0.8}], "resolution": [512, 512], "batch": 1,
    "dtype": "float16", "backend": "tensorrt", "tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
}


def write_entry(cache: EngineCache, fields=None, payload: bytes = b"plan-bytes" * 100, **kw):
    fields = dict(FIELDS if fields is None else fields)
    key = cache_key(fields)
    with cache.writer(key, fields=fields, backend=kw.pop("backend", "tensorrt"), **kw) as w:
        (w.dir / "engine.plan").write_bytes(payload)
        (w.dir / "model.weights.json").write_text("{}")
    return key, w.entry


def test_cache_key_is_stable_and_changes_with_every_field():
    key = cache_key(FIELDS)
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)
    assert cache_key(dict(reversed(list(FIELDS.items())))) == key  # insertion order does not matter
    assert cache_key(json.loads(json.dumps(FIELDS))) == key
    assert key == "618a42d4e65f804edb61"  # same on every machine and run (sorted JSON, sha256)
    keys = {key}
    for name, value in FIELDS.items():
        changed = dict(FIELDS)
        changed[name] = [value, "changed"] if not isinstance(value, list) else value + ["changed"]
        keys.add(cache_key(changed))
        without = {k: v for k, v in FIELDS.items() if k != name}
        keys.add(cache_key(without))
    assert len(keys) == 1 + 2 * len(FIELDS)
    scaled = dict(FIELDS, loras=[{"sha256": "ff00", "scale": 0.9}])
    assert cache_key(scaled) != key
    with pytest.raises(EngineOptionError, match="JSON values"):
        cache_key({"weights": torch.zeros(2)})
    with pytest.raises(EngineOptionError, match="JSON values"):
        cache_key({"scale": float("nan")})


def test_runner_keys_follow_the_options_and_key_fields(tmp_path):
    cache = EngineCache(tmp_path)
    x = toy_inputs()

    def key_of(**kw):
        with build_runner(toy(), x, backend="onnxruntime", cache=cache, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, **kw) as r:
            return r.cache_key

    k1 = key_of(key_fields={"model": "toy", "lora": "a:0.5"})
    assert key_of(key_fields={"model": "toy", "lora": "a:0.5"}) == k1
    assert key_of(key_fields={"model": "toy", "lora": "a:0.6"}) != k1
    assert key_of(key_fields={"model": "toy", "lora": "a:0.5"}, options=EngineOptions(opset=18)) != k1
    # options that do not change the artifact do not change the key
    assert key_of(key_fields={"model": "toy", "lora": "a:0.5"}, options=EngineOptions(auto_trials=5)) == k1
    assert {e.key for e in cache.entries()} == {k1, key_of(key_fields={"model": "toy", "lora": "a:0.6"}),
                                                 key_of(key_fields={"model": "toy", "lora": "a:0.5"},
                                                        options=EngineOptions(opset=18))}


def test_environment_fields_name_the_versions():
    env = environment_fields("cpu", "onnxruntime")
    assert env["backend"] == "onnxruntime" and env["device_type"] == "cpu"
    assert env["torch"] == torch.__version__ and env["onnxruntime"] and env["onnx"] and env["machine"]
    assert "gpu" not in env
    trt = environment_fields("cpu", "tensorrt")
    assert "tensorrt" in trt and "onnxruntime" not in trt
    assert versions_of(env)["torch"] == torch.__version__ and "backend" not in versions_of(env)


def test_manifest_round_trip(tmp_path):
    cache = EngineCache(tmp_path)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    key, entry = write_entry(cache, description="sd-turbo 512x512 fp16", versions={"tensorrt": "10.3.0"},
                             extra={"refittable": True})
    assert entry.path == tmp_path / "engines" / key
    found = cache.lookup(key, versions={"tensorrt": "10.3.0"})
    assert found is not None and found.problem is None
    m = found.manifest
    assert m["fields"] == FIELDS and m["key"] == key and m["backend"] == "tensorrt"
    assert m["versions"] == {"tensorrt": "10.3.0"} and found.extra == {"refittable": True}
    assert found.description == "sd-turbo 512x512 fp16"
    assert set(m["files"]) == {"engine.plan", "model.weights.json"}
    assert m["files"]["engine.plan"]["size"] == 1000 and len(m["files"]["engine.plan"]["sha256"]) == 64
    assert found.size_bytes == 1002 and before <= found.created <= datetime.now(timezone.utc)
    (listed,) = cache.entries()
    assert (listed.key, listed.backend, listed.size_bytes, listed.problem) == (key, "tensorrt", 1002, None)
    assert not [p for p in (tmp_path / "engines").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest", "fields", "format"])
def test_corrupt_entry_is_removed_so_it_gets_rebuilt(tmp_path, caplog, damage):
    cache = EngineCache(tmp_path)
    key, entry = write_entry(cache)
    plan = entry.path / "engine.plan"
    manifest = entry.path / "manifest.json"
    if damage == "flip":
        raw = bytearray(plan.read_bytes())
        raw[7] ^= 0x01
        plan.write_bytes(bytes(raw))
    elif damage == "truncate":
        plan.write_bytes(plan.read_bytes()[:-3])
    elif damage == "delete":
        plan.unlink()
    elif damage == "manifest":
        manifest.write_text("{not json")
    else:
        m = json.loads(manifest.read_text())
        if damage == "fields":
            m["fields"]["resolution"] = [704, 384]
        else:
            m["format"] = 99
        manifest.write_text(json.dumps(m))
    caplog.set_level(logging.WARNING, logger="engines")
    assert cache.lookup(key) is None
    assert not entry.path.exists()
    assert any("unusable" in r.getMessage() and key in r.getMessage() for r in caplog.records)
    # the rebuild path: a new entry for the same key is stored and found
    write_entry(cache)
    assert cache.lookup(key) is not None


def test_size_only_verification_catches_truncation_not_flips(tmp_path):
    cache = EngineCache(tmp_path, verify="size")
    key, entry = write_entry(cache)
    raw = bytearray((entry.path / "engine.plan").read_bytes())
    raw[0] ^= 0xFF
    (entry.path / "engine.plan").write_bytes(bytes(raw))
    assert cache.lookup(key) is not None  # documented: the loader catches a corrupt plan then
    (entry.path / "engine.plan").write_bytes(bytes(raw[:-1]))
    assert cache.lookup(key) is None
    with pytest.raises(EngineOptionError, match="verify"):
        EngineCache(tmp_path, verify="md5")


def test_version_mismatch_is_reported_and_removed(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    key, entry = write_entry(cache, versions={"tensorrt": "10.0.1", "torch": "2.13.0"})
    caplog.set_level(logging.WARNING, logger="engines")
    assert cache.lookup(key, versions={"tensorrt": "10.0.1"}) is not None
    assert cache.lookup(key, versions={"tensorrt": "10.3.0"}) is None
    assert not entry.path.exists()
    assert any("built with tensorrt 10.0.1, this machine has 10.3.0" in r.getMessage() for r in caplog.records)


def test_failed_write_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path)
    key = cache_key(FIELDS)
    with pytest.raises(RuntimeError, match="build failed"):
        with cache.writer(key, fields=FIELDS, backend="tensorrt") as w:
            (w.dir / "engine.plan").write_bytes(b"partial")
            raise RuntimeError("build failed")
    assert cache.lookup(key) is None
    assert list((tmp_path / "engines").iterdir()) == []
    with pytest.raises(EngineOptionError, match="does not match"):
        cache.writer("00ff", fields=FIELDS, backend="tensorrt")
    with pytest.raises(EngineOptionError, match="hex"):
        cache.lookup("../etc")


def test_clear_all_or_older_than(tmp_path):
    cache = EngineCache(tmp_path)
    old_key, old = write_entry(cache, dict(FIELDS, batch=2))
    new_key, _ = write_entry(cache, dict(FIELDS, batch=3))
    m = json.loads((old.path / "manifest.json").read_text())
    m["created"] = "2020-01-02T03:04:05+00:00"
    (old.path / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "engines" / ".tmp-deadbeef-1234").mkdir()  # an interrupted build
    cache.timing_cache_path("tensorrt-10.3.0-H100").write_bytes(b"t")
    cache.write_note("ab12", {"choice": "eager"})
    assert [e.key for e in cache.entries()] == [old_key, new_key]  # oldest first
    assert cache.clear(older_than=datetime(2024, 1, 1)) == [old_key]
    assert [e.key for e in cache.entries()] == [new_key]
    assert not (tmp_path / "engines" / ".tmp-deadbeef-1234").exists()
    assert cache.read_note("ab12") == {"choice": "eager"}
    assert cache.clear(older_than=datetime.now(timezone.utc) - timedelta(days=1)) == []
    assert cache.clear() == [new_key]
    assert cache.entries() == [] and cache.read_note("ab12") is None
    assert not (tmp_path / "timing").exists()


def test_cache_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "env"))
    assert default_cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert default_cache_root() == tmp_path / "env"
    assert EngineCache().root == tmp_path / "env"
    monkeypatch.delenv("STYLECAM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert str(default_cache_root()) == str(tmp_path / "xdg" / "stylecam")
    assert user_cache_dir({}, "posix", "/home/ann") == PurePosixPath("/home/ann/.cache/stylecam")
    assert user_cache_dir({"XDG_CACHE_HOME": "/x"}, "posix", "/home/ann") == PurePosixPath("/x/stylecam")
    assert user_cache_dir({"LOCALAPPDATA": r"C:\Users\ann\AppData\Local"}, "nt") == \
        PureWindowsPath(r"C:\Users\ann\AppData\Local\stylecam")
    assert user_cache_dir({}, "nt", r"C:\Users\ann") == PureWindowsPath(r"C:\Users\ann\AppData\Local\stylecam")


def test_unwritable_cache_dir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = EngineCache(blocker)
    key = cache_key(FIELDS)
    with pytest.raises(CacheDirError, match="--cache-dir") as info:
        with cache.writer(key, fields=FIELDS, backend="tensorrt"):
            pass
    assert "\n" not in str(info.value) and isinstance(info.value, OSError)
    assert cache.lookup(key) is None and cache.entries() == []
