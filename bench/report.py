"""The comparison report: a Markdown table per workload, ratios, and PNG charts.

Results are kept as JSON (``compare-<date>.json``) so the report can be re-rendered:

    python -m bench.report bench/results/compare-2025-01-01-1200.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.formats import per_format_table
from bench.goals import evaluate, goals_table
from bench.quality import differing_dims
from bench.units import fmt_ms, short_run_warning


@dataclass
class Row:
    """One server measured under one workload."""

    workload: str
    server: str
    rps: float = 0.0
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    cpu_ms_per_req: float = math.nan
    peak_rss_mb: float = math.nan
    mean_bytes: float = 0.0
    requests: int = 0
    errors: int = 0
    duration_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    hit_ratio: float | None = None  # tofu: result-cache hit ratio from /metrics
    renders: float | None = None  # tofu: renders during the run
    ssim_worst: float | None = None  # the quality pass (bench/quality.py) after the run
    ssim_mean: float | None = None
    ssimulacra2_worst: float | None = None  # W5's quality pass: SSIMULACRA 2 (0-100)
    ssimulacra2_mean: float | None = None
    dims: dict[str, str] = field(default_factory=dict)  # "KEY TOKEN" -> output "WxH"
    chroma: list[str] = field(default_factory=list)  # JPEG chroma subsamplings seen
    formats: dict[str, int] = field(default_factory=dict)  # quality pass: Content-Type -> count
    skipped: str | None = None  # why there is no measurement
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_ms_per_req", "peak_rss_mb"):
            if known.get(key) is None:
                known[key] = math.nan
        return cls(**known)

    def to_dict(self) -> dict:
        return {k: _json_safe(v) for k, v in asdict(self).items()}


def _json_safe(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass(frozen=True)
class WorkloadInfo:
    name: str
    title: str
    duration_s: float
    connections: int
    baseline: str
    reference: str
    note: str = ""
    peer: str = ""  # a second server ratios are computed against (sharp)
    floor_ms: float | None = None  # bench/floor.py: decode only, mean ms per photo
    floor_note: str = ""
    accept: str = ""  # the Accept header sent (W5)
    per_format: tuple[dict, ...] | list[dict] = ()  # W5: tofu alone per format, in process


def ratio(value: float, base: float) -> float | None:
    if base is None or value is None or not base or math.isnan(base) or math.isnan(value):
        return None
    return value / base


def _find(rows: Sequence[Row], server: str) -> Row | None:
    return next((r for r in rows if r.server == server and r.skipped is None and r.rps), None)


@dataclass(frozen=True)
class Ratios:
    rps_vs_base: float | None = None
    rps_vs_peer: float | None = None
    rps_vs_ref: float | None = None
    cpu_vs_base: float | None = None
    cpu_vs_peer: float | None = None


def ratios(rows: Sequence[Row], baseline: str, reference: str, peer: str = "") -> dict[str, Ratios]:
    """Per server: req/s against the baseline (thumbor), the peer (sharp) and the reference
    (ceiling), CPU per request against the baseline and the peer."""
    base = _find(rows, baseline)
    other = _find(rows, peer) if peer else None
    ref = _find(rows, reference)
    out = {}
    for row in rows:
        if row.skipped is not None:
            out[row.server] = Ratios()
            continue
        out[row.server] = Ratios(
            ratio(row.rps, base.rps) if base else None,
            ratio(row.rps, other.rps) if other else None,
            ratio(row.rps, ref.rps) if ref else None,
            ratio(row.cpu_ms_per_req, base.cpu_ms_per_req) if base else None,
            ratio(row.cpu_ms_per_req, other.cpu_ms_per_req) if other else None,
        )
    return out


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ssim(row: Row, flagged: bool) -> str:
    if row.ssim_worst is None or row.ssim_mean is None:
        return "-"
    return f"{row.ssim_worst:.3f} / {row.ssim_mean:.3f}" + (" (dims!)" if flagged else "")


def _ssimulacra2(row: Row) -> str:
    if row.ssimulacra2_worst is None or row.ssimulacra2_mean is None:
        return "-"
    return f"{row.ssimulacra2_worst:.1f} / {row.ssimulacra2_mean:.1f}"


def workload_table(info: WorkloadInfo, rows: Sequence[Row]) -> str:
    b, p = info.baseline, info.peer
    columns = [
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/req",
        "peak RSS MB",
        "mean bytes",
        "SSIM worst / mean",
        *(["SSIMULACRA 2 worst / mean"] if info.accept else []),
        "errors",
        f"req/s vs {b}",
        *([f"req/s vs {p}"] if p else []),
        f"req/s vs {info.reference}",
        f"CPU/req vs {b}",
        *([f"CPU/req vs {p}"] if p else []),
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table_ratios = ratios(rows, b, info.reference, p)
    tofu = next((r for r in rows if r.server == "tofu" and r.skipped is None), None)
    notes = []
    for row in rows:
        if row.skipped is not None:
            lines.append(f"| {row.server} | skipped: {row.skipped} |" + " |" * (len(columns) - 2))
            continue
        r = table_ratios[row.server]
        differing = differing_dims(row.dims, tofu.dims) if tofu and row is not tofu else []
        cells = [
            row.server,
            _num(row.rps),
            fmt_ms(row.p50_ms),
            fmt_ms(row.p99_ms),
            _num(row.cpu_ms_per_req, 2),
            _num(row.peak_rss_mb, 0),
            _num(row.mean_bytes, 0),
            _ssim(row, bool(differing)),
            *([_ssimulacra2(row)] if info.accept else []),
            str(row.errors),
            _x(r.rps_vs_base),
            *([_x(r.rps_vs_peer)] if p else []),
            _x(r.rps_vs_ref),
            _x(r.cpu_vs_base),
            *([_x(r.cpu_vs_peer)] if p else []),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        extra = []
        if differing:
            shown = "; ".join(differing[:3]) + ("; ..." if len(differing) > 3 else "")
            extra.append(
                f"output dimensions differ from tofu's by more than 1px on {len(differing)} of "
                f"{len(row.dims)} ({shown})"
            )
        if tofu is not None and row is not tofu and row.chroma and row.chroma != tofu.chroma:
            extra.append(
                f"chroma subsampling {', '.join(row.chroma)} (tofu {', '.join(tofu.chroma)})"
            )
        if info.accept and row.formats:
            extra.append(
                "answered " + ", ".join(f"{k} x{v}" for k, v in sorted(row.formats.items()))
            )
        if row.hit_ratio is not None and not math.isnan(row.hit_ratio):
            extra.append(f"result-cache hit ratio {row.hit_ratio:.1%}")
        if row.renders is not None and row.requests:
            extra.append(f"{row.renders / row.requests:.2f} renders per response")
        if row.errors:
            extra.append("statuses " + ", ".join(f"{k}: {v}" for k, v in row.statuses.items()))
        extra += row.notes
        if extra:
            notes.append(f"- {row.server}: " + "; ".join(extra))
    out = lines + (["", *notes] if notes else [])
    if info.floor_ms is not None:
        floor = "Floor, decoding alone (libjpeg-turbo at tofu's DCT scale, in-process): "
        floor += info.floor_note
        if tofu is not None and not math.isnan(tofu.cpu_ms_per_req):
            floor += f"; tofu's CPU ms/req is {tofu.cpu_ms_per_req / info.floor_ms:.2f}x it"
        out += ["", floor + "."]
    if info.per_format:
        out += [
            "",
            "tofu alone per output format, in process (the same photos and sizes; the format's "
            "default quality or the token's q; encode ms is the render's encode phase, the "
            "minimum of --format-repeat renders):",
            "",
            per_format_table(info.per_format),
        ]
    return "\n".join(out)


def render_markdown(results: dict) -> str:
    meta = results["meta"]
    rows = [Row.from_dict(r) for r in results["rows"]]
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    out = [
        f"# tofu comparison — {meta.get('date', '')}",
        "",
        f"- Machine: {machine.get('nproc', '?')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('memory_gib', '?')} GiB RAM, Linux {machine.get('kernel', '?')}, "
        f"Python {machine.get('python', '?')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Command: `{meta.get('command', '')}`",
        f"- Photos: {meta.get('photos', '')}",
        f"- Load: {meta.get('load', '')}",
        "- The load generator (wrk) runs on the same machine and takes part of the CPU; CPU "
        "ms/req counts the server's process tree only (utime + stime from /proc), peak RSS sums "
        "all its processes.",
        "- SSIM worst / mean: each server's output for every photo of the workload, fetched once "
        "after its run, against the original decoded in full by libvips, autorotated and resized "
        "with Lanczos-3 to that output's dimensions (a crop: both centres of an odd margin, the "
        "better kept; RGB, scikit-image); (dims!) marks outputs more than 1px off tofu's. "
        "W5 also gives SSIMULACRA 2 (0-100, higher is better; 90 is visually lossless, 70 "
        "high quality) against the best-SSIM reference.",
        "",
    ]
    for info_dict in results["workloads"]:
        info = WorkloadInfo(**info_dict)
        wl_rows = [r for r in rows if r.workload == info.name]
        if not wl_rows:
            continue
        out += [
            f"## {info.name} — {info.title}",
            "",
            f"{info.duration_s:g} s per server, {info.connections} connections."
            + (f" {info.note}" if info.note else ""),
            "",
            *(
                [f"**Warning**: {warning}.", ""]
                if (warning := short_run_warning(info.duration_s, _default_seconds(info.name)))
                else []
            ),
            workload_table(info, wl_rows),
            "",
        ]
    outcomes = [
        o for info_dict in results["workloads"] for o in evaluate(WorkloadInfo(**info_dict), rows)
    ]
    if outcomes:
        out += ["## Targets", "", goals_table(outcomes), ""]
    for chart in results.get("charts", []):
        out += [f"![{Path(chart).stem}]({Path(chart).name})", ""]
    return "\n".join(out)


def _default_seconds(workload: str) -> float:
    from bench.workloads import WORKLOADS  # pyvips; only when a report is written

    return WORKLOADS[workload].duration_s if workload in WORKLOADS else 0.0


def _colour(server: str) -> str:
    family = server.split("-")[0]
    return {
        "tofu": "tab:orange",
        "thumbor": "tab:blue",
        "sharp": "tab:purple",
        "nginx": "tab:green",
    }.get(family, "tab:grey")


def write_charts(results: dict, prefix: Path) -> list[Path]:
    """Throughput and latency (p50 solid, p99 hatched) bar charts, one panel per workload, each
    server in its family's colour (tofu in orange) in both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [Row.from_dict(r) for r in results["rows"] if r.get("skipped") is None]
    names = [w["name"] for w in results["workloads"] if any(r.workload == w["name"] for r in rows)]
    if not names:
        return []
    paths = []
    for what in ("throughput", "latency"):
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            wl = [r for r in rows if r.workload == name]
            labels = [r.server for r in wl]
            xs = range(len(wl))
            if what == "throughput":
                colours = [_colour(r.server) for r in wl]
                bars = ax.bar(xs, [r.rps for r in wl], color=colours)
                ax.bar_label(
                    bars,
                    labels=[f"{r.rps:,.0f}" if r.rps >= 100 else f"{r.rps:.1f}" for r in wl],
                    fontsize=7,
                )
                ax.set_ylabel("requests/s")
            else:
                # Each server in its colour, as in the throughput chart (tofu in orange): p50
                # solid, p99 hatched and lighter, so the legend names the percentiles only.
                width = 0.4
                colours = [_colour(r.server) for r in wl]
                for shift, key, style in (
                    (-width / 2, "p50_ms", {"alpha": 1.0, "hatch": None}),
                    (width / 2, "p99_ms", {"alpha": 0.45, "hatch": "//"}),
                ):
                    values = [getattr(r, key) for r in wl]
                    bars = ax.bar(
                        [x + shift for x in xs],
                        values,
                        width,
                        color=colours,
                        edgecolor="black",
                        linewidth=0.4,
                        label=f"{key[:3]} ({'solid' if style['hatch'] is None else 'hatched'})",
                        **style,
                    )
                    ax.bar_label(bars, labels=[fmt_ms(v) for v in values], fontsize=6)
                ax.set_ylabel("latency ms")
                legend = ax.legend()
                for patch in legend.get_patches():  # neutral: colours are servers, not p50/p99
                    patch.set_facecolor("lightgrey")
            ax.set_title(name)
            ax.set_xticks(list(xs))
            ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"tofu comparison: {what}")
        fig.tight_layout()
        path = prefix.with_name(f"{prefix.name}-{what}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """``stem``.json, the charts and ``stem``.md in ``out_dir``; returns (markdown, json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(results, out_dir / stem)
    results = {**results, "charts": [p.name for p in charts]}
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=2, allow_nan=False, default=str) + "\n")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(render_markdown(results) + "\n")
    return md_path, json_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", type=Path, help="a compare-*.json file")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    md, _ = write_report(results, args.results.parent, args.results.stem)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
