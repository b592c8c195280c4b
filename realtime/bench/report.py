"""Reading bench results side by side: a text comparison with ratios, a stacked-bar plot of the stage breakdown, and
the Markdown tables of ``benchmarks/results/README.md``.

Runs are grouped by mode and model size; within a group the first run is the reference and every other figure is
shown with its ratio to it (``x0.50`` = half the reference: for times that is twice as fast, for fps half as fast).
matplotlib is imported only by :func:`plot_stages` (extra ``plot``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realtime.bench.stats import STAGES, STEP_PARTS
from realtime.errors import OutputError, missing_extra
from realtime.files import atomic_output

Column = tuple[str, dict[str, Any], dict[str, Any]]  # (result label, run, document)


def size_text(run: dict[str, Any]) -> str:
    return f"{run['size']['width']}x{run['size']['height']}"


def machine(doc: dict[str, Any]) -> str:
    """The GPU name, else the CPU model (``"cpu"`` when unknown)."""
    env = doc["environment"]
    if env.get("gpu"):
        return str(env["gpu"]["name"])
    return str((env.get("cpu") or {}).get("model") or "cpu")


def model_name(doc: dict[str, Any]) -> str:
    return str(doc["settings"]["model"].get("model", "?"))


def run_name(label: str, run: dict[str, Any]) -> str:
    """``label [system backend bN variant]``: what tells runs apart in tables and plots."""
    tags = [] if run["system"] == "stylecam" else [run["system"]]
    tags += [run["backend_used"], f"b{run['batch']}"]
    text = run["label"].lower()
    if "no controlnet" in text:
        tags.append("no CN")
    elif "controlnet" in text:
        tags.append("CN")
    return f"{label} [{' '.join(tags)}]"


def columns(docs: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[Column]:
    return [(label, run, doc) for label, doc in zip(labels, docs, strict=True) for run in doc["runs"]]


def groups(cols: list[Column]) -> dict[tuple[str, str], list[Column]]:
    out: dict[tuple[str, str], list[Column]] = {}
    for c in cols:
        out.setdefault((c[1]["mode"], size_text(c[1])), []).append(c)
    return out


def _stage(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    for s in run["stages"]:
        if s["name"] == name and s["status"] == "ok":
            return s
    return None


def _rows(run: dict[str, Any]) -> dict[str, float | None]:
    """Every comparable figure of a run, by row name."""
    rows: dict[str, float | None] = {
        "frame p50 ms": run["frame"]["p50_ms"], "frame p95 ms": run["frame"]["p95_ms"],
        "frame p99 ms": run["frame"]["p99_ms"], "frame max ms": run["frame"]["max_ms"], "fps": run["fps"],
    }
    for st in run["stages"]:
        if st["status"] == "ok":
            rows[f"{st['name']} p50 ms"] = st["p50_ms"]
    live = run.get("live")
    if live:
        rows.update({"latency p50 ms": live["latency"]["p50_ms"], "latency p99 ms": live["latency"]["p99_ms"],
                     "added latency p50 ms": (live["added_latency"] or {}).get("p50_ms"),
                     "host critical p50 ms": (live.get("host_critical") or {}).get("p50_ms"),
                     "host critical p99 ms": (live.get("host_critical") or {}).get("p99_ms"),
                     "dropped frames": float(live["dropped"])})
    mem = run["memory"]
    rows.update({"GPU allocated peak MiB": mem["gpu_allocated_peak_mb"], "GPU peak incl. build MiB": mem.get("gpu_peak_mb"),
                 "GPU device used peak MiB": mem["gpu_device_used_peak_mb"], "peak RSS MiB": mem["rss_peak_mb"]})
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def compare_text(docs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """Results side by side, one table per (mode, size), with ratios to the group's first run."""
    lines: list[str] = []
    for (mode, size), cols in groups(columns(docs, labels)).items():
        names = [run_name(lbl, run) for lbl, run, _ in cols]
        per = [_rows(run) for _, run, _ in cols]
        keys = [k for k in dict.fromkeys(k for r in per for k in r) if any(r.get(k) is not None for r in per)]
        cells = [[machine(doc) for _, _, doc in cols], [f"{model_name(doc)} {run['dtype']}" for _, run, doc in cols]]
        for k in keys:
            ref = per[0].get(k)
            row = []
            for i, r in enumerate(per):
                v = r.get(k)
                ratio = f" (x{v / ref:.2f})" if (i and v is not None and ref not in (None, 0)) else ""
                row.append(_fmt(v) + ratio)
            cells.append(row)
        heads = ["machine", "model", *keys]
        w0 = max(len(h) for h in heads)
        widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
        lines.append(f"== {mode} {size} (ratios to the first column) ==")
        lines.append(" " * w0 + "  " + "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)))
        for head, row in zip(heads, cells, strict=True):
            lines.append(head.ljust(w0) + "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def stage_breakdown(run: dict[str, Any]) -> list[tuple[str, float]]:
    """(stage, mean ms) of the run's measured leaf stages in frame order: the step's parts replace the step when they
    were measured. Means add up (percentiles do not), so the bar's height is the mean frame."""
    ok = [s for s in run["stages"] if s["status"] == "ok"]
    has_parts = any(s["parent"] == "step" for s in ok)
    return [(s["name"], float(s["mean_ms"])) for s in ok if not (has_parts and s["name"] == "step")]


def _check_target(path: Path, overwrite: bool) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} exists: pass --overwrite to replace it")


def plot_stages(docs: Sequence[dict[str, Any]], labels: Sequence[str], path: str | os.PathLike[str], *,
                overwrite: bool = False) -> Path:
    """A PNG (or any format matplotlib writes by extension) with one stacked bar per run: mean ms per stage."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise missing_extra("matplotlib", "plot") from e
    target = Path(path)
    cols = columns(docs, labels)
    order = list(STAGES)
    fig = Figure(figsize=(max(6.0, 1.3 * len(cols) + 3.0), 5.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    palette = matplotlib.colormaps["tab20"]
    cmap = {name: palette(i % 20) for i, name in enumerate(order)}
    hatch = {name: ("//" if name in STEP_PARTS else "") for name in order}
    seen: set[str] = set()
    for x, (_label, run, _) in enumerate(cols):
        bottom = 0.0
        for name, ms in stage_breakdown(run):
            ax.bar(x, ms, bottom=bottom, color=cmap[name], hatch=hatch[name], edgecolor="white",
                   label=name if name not in seen else None)
            seen.add(name)
            bottom += ms
        ax.text(x, bottom, _fmt(bottom), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"{run_name(lbl, run)}\n{run['mode']} {size_text(run)}" for lbl, run, _ in cols],
                       rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean ms per frame")
    ax.set_title("stylecam bench: stage breakdown")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    _check_target(target, overwrite)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format=target.suffix.lstrip(".") or "png")
    return target


# --------------------------------------------------------------------------------------------------------- markdown
def _md(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown_report(docs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """Markdown tables of every run (summary, stage p50s), StreamDiffusion comparisons and the stage glossary."""
    cols = columns(docs, labels)
    out = ["| result | machine | model | mode | size | backend | dtype | batch | frame p50 ms | p95 | p99 | fps | GPU alloc peak MiB | GPU device peak MiB | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, run, doc in cols:
        m, f = run["memory"], run["frame"]
        out.append(f"| {run_name(label, run)} | {machine(doc)} | {model_name(doc)} | {run['mode']} | {size_text(run)} | {run['backend_used']} | "
                   f"{run['dtype']} | {run['batch']} | {_md(f['p50_ms'])} | {_md(f['p95_ms'])} | {_md(f['p99_ms'])} | "
                   f"{_md(run['fps'], 2)} | {_md(m['gpu_allocated_peak_mb'], 0)} | {_md(m['gpu_device_used_peak_mb'], 0)} | "
                   f"{_md(m['rss_peak_mb'], 0)} |")
    stage_names = [n for n in STAGES if any(_stage(run, n) for _, run, _ in cols)]
    if stage_names:
        out += ["", "Stage p50 (ms per frame; `-` = skipped or not part of the mode; the reason is in the JSON):", "",
                "| result | mode | " + " | ".join(stage_names) + " |", "|---|---|" + "---|" * len(stage_names)]
        for label, run, _ in cols:
            vals = [_md((_stage(run, n) or {}).get("p50_ms"), 2) for n in stage_names]
            out.append(f"| {run_name(label, run)} | {run['mode']} | " + " | ".join(vals) + " |")
    lives = [(label, run) for label, run, _ in cols if run.get("live")]
    if lives:
        out += ["", "Live (paced source):", "", "| result | size | target fps | achieved fps | latency p50 ms | p99 | "
                "added latency p50 ms | host critical p50 ms | dropped |", "|---|---|---|---|---|---|---|---|---|"]
        for label, run in lives:
            lv = run["live"]
            out.append(f"| {run_name(label, run)} | {size_text(run)} | {_md(lv['target_fps'], 0)} | "
                       f"{_md(lv['achieved_fps'], 2)} | {_md(lv['latency']['p50_ms'])} | {_md(lv['latency']['p99_ms'])} | "
                       f"{_md((lv['added_latency'] or {}).get('p50_ms'))} | "
                       f"{_md((lv.get('host_critical') or {}).get('p50_ms'))} | {lv['dropped']} |")
    comps = [(label, doc) for label, doc in zip(labels, docs, strict=True) if doc.get("comparison")]
    if comps:
        out += ["", "StreamDiffusion side by side (same weights, size, dtype, TAESD, 1 step, alternating calls):", "",
                "| result | machine | size | StreamDiffusion fps | stylecam fps (no ControlNet) | ratio | stylecam fps (Canny ControlNet) |",
                "|---|---|---|---|---|---|---|"]
        for label, doc in comps:
            c = doc["comparison"]
            out.append(f"| {label} | {machine(doc)} | {c.get('size', '-')} | {_md(c.get('streamdiffusion_fps'), 2)} | "
                       f"{_md(c.get('stylecam_fps'), 2)} | {_md(c.get('ratio_stylecam_to_streamdiffusion'), 2)} | "
                       f"{_md(c.get('stylecam_controlnet_fps'), 2)} |")
    return "\n".join(out) + "\n"


def summary_table(docs: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """One Markdown table, one row per run of every document: what the GPU suite prints at its end."""
    out = ["| result | system | mode | size | backend | step p50 ms | frame p50 ms | p99 | fps | host critical p50 ms | "
           "added latency p50 ms | GPU peak incl. build MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, run, _ in columns(docs, labels):
        live = run.get("live") or {}
        step = _stage(run, "step")
        out.append(f"| {label} | {run['system']} | {run['mode']} | {size_text(run)} | {run['backend_used']} | "
                   f"{_md((step or {}).get('p50_ms'), 2)} | {_md(run['frame']['p50_ms'], 2)} | "
                   f"{_md(run['frame']['p99_ms'], 2)} | {_md(run['fps'], 2)} | "
                   f"{_md((live.get('host_critical') or {}).get('p50_ms'), 2)} | "
                   f"{_md((live.get('added_latency') or {}).get('p50_ms'), 2)} | "
                   f"{_md(run['memory'].get('gpu_peak_mb'), 0)} |")
    return "\n".join(out) + "\n"


def stage_glossary() -> str:
    """The Markdown list of stage names and what they measure (unit: milliseconds per frame)."""
    return "\n".join(f"- `{name}`: {what}" for name, what in STAGES.items()) + "\n"
