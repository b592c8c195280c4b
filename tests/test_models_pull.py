"""`stylecam models pull/list` against a stand-in Hugging Face hub on 127.0.0.1 (no other network).

The stand-in answers what huggingface_hub 2.4.0 asks (read from its code and checked against the request log below):
``GET /api/models/<repo>[/revision/<rev>]`` (model info; sizes, blob ids and LFS data only when ``blobs`` is asked),
``HEAD /<repo>/resolve/<commit>/<file>`` (``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag``, ``Content-Length`` /
``X-Linked-Size``; LFS files answer 302 to a second "CDN" server, a different origin, as the hub does) and ``GET`` of
the file or blob (``Range`` answered with 206). It never sends ``X-Xet-Hash``, so plain HTTP is used. The pull runs in
a subprocess with ``HF_ENDPOINT`` pointing at it (huggingface_hub reads it at import) and ``HF_HOME`` in tmp.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

COMMITS = {"tiny-org/sd-tiny": "1" * 40, "tiny-org/cn-tiny": "2" * 40, "tiny-org/taesd-tiny": "3" * 40}
CARD = "---\nlicense: other\nlicense_name: tiny-licence\nlicense_link: https://example.invalid/LICENSE\n---\n# tiny\n"
LFS_SUFFIXES = (".safetensors", ".bin")
CUT = "unet/diffusion_pytorch_model.fp16.safetensors"  # the stand-in drops the connection halfway the first time


# ------------------------------------------------------------------------------------------------ tiny repos
def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build_repos(root: Path) -> dict[str, dict[str, bytes]]:
    """random:tiny components saved the way the real repos are laid out (``save_pretrained``)."""
    import torch

    from realtime.diffusion.models import (
        ARCHS, SD_TURBO_SCHEDULER, build_random_controlnet, build_random_taesd, build_random_text_encoder,
        build_random_unet, generated_tokenizer,
    )

    torch.manual_seed(0)
    sd = root / "sd-tiny"
    unet, text = build_random_unet("tiny"), build_random_text_encoder("tiny")
    unet.save_pretrained(sd / "unet")
    unet.half().save_pretrained(sd / "unet", variant="fp16")
    text.save_pretrained(sd / "text_encoder")
    text.half().save_pretrained(sd / "text_encoder", variant="fp16")
    build_random_taesd("tiny").save_pretrained(sd / "vae")  # a stand-in vae/: fetched only with --vae full
    generated_tokenizer(ARCHS["tiny"]["text"]["vocab_size"], cache_root=root).save_pretrained(sd / "tokenizer")
    (sd / "scheduler").mkdir()
    sched = {"_class_name": "EulerDiscreteScheduler", **SD_TURBO_SCHEDULER}
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], "vae": ["diffusers", "AutoencoderTiny"],
             "feature_extractor": [None, None]}
    (sd / "model_index.json").write_text(json.dumps(index))
    (sd / "README.md").write_text(CARD)
    (sd / "sd_tiny_single_file.safetensors").write_bytes(b"not fetched: stylecam loads the folders")
    (sd / "feature_extractor").mkdir()
    (sd / "feature_extractor" / "preprocessor_config.json").write_text("{}")
    cn = root / "cn-tiny"
    torch.manual_seed(1)
    build_random_controlnet("tiny", unet.float()).save_pretrained(cn)
    (cn / "README.md").write_text("---\nlicense: openrail\n---\n")
    taesd = root / "taesd-tiny"
    build_random_taesd("tiny").save_pretrained(taesd, safe_serialization=False)  # .bin only: the safe .bin path
    return {"tiny-org/sd-tiny": _files(sd), "tiny-org/cn-tiny": _files(cn), "tiny-org/taesd-tiny": _files(taesd)}


# ------------------------------------------------------------------------------------------------ the stand-in
class Hub:
    """Two HTTP servers on 127.0.0.1: the hub (API + resolve) and a "CDN" for LFS blobs. Logs every request."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.blobs = {hashlib.sha256(d).hexdigest(): d for files in repos.values() for d in files.values()}
        self.log: list[tuple[str, str, str, str | None, int]] = []  # (server, method, path?query, Range, status)
        self.cut = {hashlib.sha256(repos["tiny-org/sd-tiny"][CUT]).hexdigest()}
        self.lock = threading.Lock()
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("hub"))
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("cdn"))
        for server in (self.hub, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def close(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    def requests(self, server: str | None = None) -> list[tuple[str, str, str, str | None, int]]:
        with self.lock:
            return [r for r in self.log if server in (None, r[0])]

    def model_info(self, repo: str, blobs: bool) -> dict:
        siblings = []
        for path, data in sorted(self.repos[repo].items()):
            s: dict = {"rfilename": path}
            if blobs:
                s.update(size=len(data), blobId=_git_sha1(data))
                if path.endswith(LFS_SUFFIXES):
                    s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(s)
        return {"_id": repo, "id": repo, "modelId": repo, "sha": COMMITS[repo], "private": False, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": ["diffusers"], "siblings": siblings,
                "cardData": {"license": "other"}, "lastModified": "2026-12-01T00:00:00.000Z"}

    def _handler(self, server: str):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest's output clean; requests go to hub.log
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                with hub.lock:
                    hub.log.append((server, self.command, self.path, self.headers.get("Range"), status))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD" and body:
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                url = urlsplit(self.path)
                path = unquote(url.path)
                if server == "cdn":
                    return self._blob(path.rsplit("/", 1)[-1])
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    if m.group(1) not in hub.repos:
                        return self._send(404, {"X-Error-Code": "RepoNotFound", "Content-Length": "0"})
                    blobs = parse_qs(url.query).get("blobs", ["false"])[0].lower() == "true"
                    body = json.dumps(hub.model_info(m.group(1), blobs)).encode()
                    return self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m or m.group(1) not in hub.repos:
                    return self._send(404, {"X-Error-Code": "RepoNotFound", "Content-Length": "0"})
                repo, rev, file = m.groups()
                commit = {"X-Repo-Commit": COMMITS[repo]}
                data = hub.repos[repo].get(file)
                if rev not in ("main", COMMITS[repo]) or data is None:
                    return self._send(404, {"X-Error-Code": "EntryNotFound", "Content-Length": "0", **commit})
                if file.endswith(LFS_SUFFIXES):
                    sha = hashlib.sha256(data).hexdigest()
                    return self._send(302, {"Location": f"{hub.cdn_url}/blobs/{sha}", "X-Linked-Etag": f'"{sha}"',
                                            "X-Linked-Size": str(len(data)), "Content-Length": "0", **commit})
                return self._send(200, {"ETag": f'"{_git_sha1(data)}"', "Content-Length": str(len(data)),
                                        "Content-Type": "application/octet-stream", **commit}, data)

            def _blob(self, sha: str) -> None:
                data = hub.blobs.get(sha)
                if data is None:
                    return self._send(404, {"Content-Length": "0"})
                rng = self.headers.get("Range")
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    part = data[start:]
                    return self._send(206, {"Content-Length": str(len(part)), "ETag": f'"{sha}"',
                                            "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, part)
                if self.command == "GET" and sha in hub.cut:
                    hub.cut.discard(sha)  # once: a connection that drops halfway through the file
                    self._send(200, {"Content-Length": str(len(data)), "ETag": f'"{sha}"'})
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                return self._send(200, {"Content-Length": str(len(data)), "ETag": f'"{sha}"',
                                        "Accept-Ranges": "bytes"}, data)

        return Handler


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = Hub(build_repos(tmp_path_factory.mktemp("repos")))
    yield h
    h.close()


def stylecam(hub: Hub, hf_home: Path, *argv: str, offline: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HF_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"))}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=hub.endpoint, NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    # The CLI sets this before huggingface_hub is imported (console.quiet_libraries); the chunk-size line below imports
    # it first, so set it here as the CLI would. stylecam's own progress bar is plain tqdm, not affected.
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    # huggingface_hub reads the body in 10 MiB chunks and resumes from the last whole chunk: smaller chunks let a
    # tiny file exercise the Range resume (same code path, the chunk size only).
    code = ("import sys; import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 64 * 1024\n"
            "from realtime.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=120)


def snapshot(hf_home: Path, repo: str) -> Path:
    return hf_home / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / COMMITS[repo]


def cached(hf_home: Path, repo: str) -> dict[str, bytes]:
    snap = snapshot(hf_home, repo)
    return {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*") if p.is_file()} if snap.is_dir() else {}


SET = ["--model", "tiny-org/sd-tiny", "--controlnet", "tiny-org/cn-tiny", "--vae", "tiny-org/taesd-tiny"]


# ------------------------------------------------------------------------------------------------ tests
def test_pull_fp16_resumes_lists_and_loads_offline(hub, tmp_path, astronaut):
    from PIL import Image

    hf_home = tmp_path / "hf"
    r = stylecam(hub, hf_home, "models", "pull", *SET, "--dtype", "fp16")
    assert r.returncode == 0, r.stderr
    sd = cached(hf_home, "tiny-org/sd-tiny")
    src = hub.repos["tiny-org/sd-tiny"]
    want = {"model_index.json", "README.md", "scheduler/scheduler_config.json", "unet/config.json", CUT,
            "text_encoder/config.json", "text_encoder/model.fp16.safetensors"}
    want |= {f for f in src if f.startswith("tokenizer/")}
    assert set(sd) == want, set(sd) ^ want  # no vae/, no fp32 weights, no single file, no feature_extractor
    assert all(sd[f] == src[f] for f in sd)  # byte-identical, the interrupted file included
    assert set(cached(hf_home, "tiny-org/taesd-tiny")) == {"config.json", "diffusion_pytorch_model.bin"}
    assert set(cached(hf_home, "tiny-org/cn-tiny")) == {"config.json", "diffusion_pytorch_model.safetensors", "README.md"}
    ref = hf_home / "hub" / "models--tiny-org--sd-tiny" / "refs" / "main"
    assert ref.read_text() == COMMITS["tiny-org/sd-tiny"]

    # The dropped connection was resumed with a Range request, answered with the rest of the file.
    cut_sha = hashlib.sha256(src[CUT]).hexdigest()
    blob_gets = [(rng, status) for srv, m, p, rng, status in hub.requests("cdn") if p.endswith(cut_sha) and m == "GET"]
    assert len(blob_gets) == 2 and blob_gets[0] == (None, 200) and blob_gets[1][1] == 206, blob_gets
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", blob_gets[1][0]).group(1))  # the last whole chunk received
    assert 0 < resumed_at <= len(src[CUT]) // 2, blob_gets
    # huggingface_hub asked for file metadata in the model info (blobs=True) before downloading anything.
    api = [p for srv, m, p, *_ in hub.requests("hub") if p.startswith("/api/models/tiny-org/sd-tiny")]
    assert api and all("blobs=true" in p for p in api), api

    total = sum(len(src[f]) for f in want) + sum(len(hub.repos["tiny-org/cn-tiny"][f]) for f in ("config.json", "diffusion_pytorch_model.safetensors", "README.md"))
    total += sum(len(v) for v in hub.repos["tiny-org/taesd-tiny"].values())
    from realtime.diffusion.pull import human_size

    assert f"total size {human_size(total)}; to download {human_size(total)} in {len(want) + 5} files" in r.stderr, r.stderr
    assert "stylecam models pull" in r.stderr and "100%" in r.stderr, r.stderr  # the progress bar (tqdm)
    assert "Traceback" not in r.stderr and "WARNING" not in r.stderr, r.stderr

    # Listed offline, with the licence from the model card.
    before = len(hub.requests())
    listed = stylecam(hub, hf_home, "models", "list", offline=True)
    assert listed.returncode == 0, listed.stderr
    assert "tiny-org/sd-tiny  main@111111111111" in listed.stdout and "tiny-licence <https://example.invalid/LICENSE>" in listed.stdout
    rows = {row["id"]: row for row in json.loads(stylecam(hub, hf_home, "models", "list", "--json", offline=True).stdout)}
    assert set(rows) == set(COMMITS) and rows["tiny-org/sd-tiny"]["fp16"] and rows["tiny-org/cn-tiny"]["license"] == "openrail"
    assert all(row["complete"] for row in rows.values())

    # A later run loads it all from the cache, offline: fp16 variant and a .bin-only TAESD, no --allow-pickle.
    photo, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(astronaut[::8, ::8]).save(photo)
    img = stylecam(hub, hf_home, "image", str(photo), "-o", str(out), *SET, "--size", "64x64", offline=True)
    assert img.returncode == 0, img.stderr
    assert Image.open(out).size == (64, 64)
    assert len(hub.requests()) == before  # nothing asked of the hub while offline


def test_pull_fp32_takes_the_default_files_and_skips_cached_ones(hub, tmp_path):
    hf_home = tmp_path / "hf"
    argv = ["models", "pull", "--model", "tiny-org/sd-tiny", "--controlnet", "none", "--vae", "full", "--dtype", "fp32"]
    r = stylecam(hub, hf_home, *argv)
    assert r.returncode == 0, r.stderr
    sd = cached(hf_home, "tiny-org/sd-tiny")
    assert {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors"} <= set(sd)
    assert not [f for f in sd if ".fp16." in f]
    n = len(hub.requests())
    again = stylecam(hub, hf_home, *argv)
    assert again.returncode == 0, again.stderr
    assert "to download 0 B in 0 files" in again.stderr, again.stderr
    assert [m for _, m, p, *_ in hub.requests()[n:] if "/resolve/" in p or m == "HEAD"] == []  # only the model info
    closed = Hub.__new__(Hub)  # hub unreachable, everything asked for already cached: a warning, exit 0
    closed.endpoint = hub.endpoint.rsplit(":", 1)[0] + ":9"
    cut_off = stylecam(closed, hf_home, *argv)
    assert cut_off.returncode == 0 and "cannot reach the Hugging Face hub" in cut_off.stderr, cut_off.stderr
    assert "cached copies are complete" in cut_off.stderr


def test_pull_errors_are_one_line(hub, tmp_path):
    def one_line(r: subprocess.CompletedProcess, *needles: str) -> None:
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and all(n in lines[0] for n in needles), r.stderr

    hf_home = tmp_path / "hf"
    one_line(stylecam(hub, hf_home, "models", "pull", "--model", "tiny-org/nope", "--dtype", "fp16"), "tiny-org/nope", "not found")
    one_line(stylecam(hub, hf_home, "models", "pull", "--dtype", "fp16", offline=True), "HF_HUB_OFFLINE")
    one_line(stylecam(hub, hf_home, "models", "pull", "--dtype", "fp8"), "--dtype")
    one_line(stylecam(hub, hf_home, "models", "pull", "--model", "./no/such"), "./no/such")
    closed = Hub.__new__(Hub)  # an endpoint where nothing listens: the network failure, named, once
    closed.endpoint = hub.endpoint.rsplit(":", 1)[0] + ":9"
    one_line(stylecam(closed, hf_home, "models", "pull", "--dtype", "fp16"), "cannot reach the Hugging Face hub", "ConnectError")
    assert not (hf_home / "hub").exists() or not list((hf_home / "hub").glob("models--*/snapshots/*/*"))
