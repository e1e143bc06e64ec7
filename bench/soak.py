"""Memory soak: the realistic mix (W2) against tofu for a long time, watching every process's RSS.

    python -m bench.soak --photos ../shared/corpus/photos --duration 10m
    python -m bench.soak --duration 20s --interval 1s          # a smoke run

Starts tofu (default configuration unless ``--tofu-args``) over a temporary origin of virtual
keys, runs wrk with the W2 mix, samples the RSS of every tofu process every ``--interval`` and
reports the slope of RSS over the second half of the run (MB/min, least squares): the first half
is warm-up (caches filling, allocator arenas growing); a slope that stays clearly positive after
it is a leak. Plots RSS over time to ``soak-<date>.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from bench import metrics
from bench.mix import DEFAULT_SIZE_MIX, format_size_mix, parse_size_mix
from bench.procs import group_stats, linear_slope
from bench.servers import start_tofu
from bench.targets import Kind, paths_for
from bench.units import fmt_bytes, parse_duration
from bench.workloads import BIG_MEGAPIXELS, find_photos, pairs_for, prepare_origin, split_big
from bench.wrk import Progress, WrkError, WrkResult, WrkRun, default_threads

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--photos", type=Path, default=ROOT / "samples", help="JPEG originals")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="report dir")
    p.add_argument("--duration", type=parse_duration, default=600.0, help="default 10m")
    p.add_argument("--interval", type=parse_duration, default=5.0, help="RSS sampling period")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=default_threads(), help="wrk threads")
    p.add_argument("--keys", type=int, default=200, help="virtual keys over the photos")
    p.add_argument("--zipf-s", type=float, default=1.0)
    p.add_argument("--sizes", default=format_size_mix(DEFAULT_SIZE_MIX))
    p.add_argument("--list-length", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tofu-args", default="", help="extra `tofu serve` flags, e.g. '--workers 1'")
    p.add_argument("--tag", help="file stem (default soak-YYYY-MM-DD-HHMM)")
    return p


Series = list[tuple[float, dict[int, int]]]


def slopes_mb_per_min(series: Series) -> dict[str, float]:
    """RSS slope in MB/min over the second half of ``series``, per pid and for the total."""
    if not series:
        return {}
    half = series[-1][0] / 2
    tail = [(t, rss) for t, rss in series if t >= half]
    out = {"total": linear_slope([(t / 60, sum(r.values()) / MB) for t, r in tail])}
    pids = sorted({pid for _, rss in tail for pid in rss})
    for pid in pids:
        points = [(t / 60, rss[pid] / MB) for t, rss in tail if pid in rss]
        out[str(pid)] = linear_slope(points)
    return out


def plot(series: Series, names: dict[int, str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    minutes = [t / 60 for t, _ in series]
    ax.plot(minutes, [sum(r.values()) / MB for _, r in series], label="all processes", lw=2)
    for pid in sorted({pid for _, rss in series for pid in rss}):
        ax.plot(
            [t / 60 for t, r in series if pid in r],
            [r[pid] / MB for _, r in series if pid in r],
            label=f"{names.get(pid, '?')} {pid}",
            lw=1,
        )
    ax.axvline(minutes[-1] / 2 if minutes else 0, color="grey", ls=":", label="slope from here")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS MB")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    photos = find_photos(args.photos)
    if not photos:
        print(f"no JPEG photos under {args.photos}", file=sys.stderr)
        return 2
    ordinary, big = split_big(photos, BIG_MEGAPIXELS)
    started_at = datetime.now()
    stem = args.tag or f"soak-{started_at:%Y-%m-%d-%H%M}"
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = Path(tmp)
        origin = prepare_origin(workdir / "origin", ordinary or big, [], args.keys, 0)
        pairs = pairs_for(
            "W2",
            origin,
            list_length=args.list_length,
            sizes=parse_size_mix(args.sizes),
            zipf_s=args.zipf_s,
            seed=args.seed,
        )
        paths = paths_for(Kind.TOFU, pairs)
        tofu = start_tofu("soak-tofu", origin.root, workdir, extra=shlex.split(args.tofu_args))
        series: Series = []
        names: dict[int, str] = {}
        latest: list[Progress] = []
        outcome: dict[str, WrkResult | Exception] = {}
        try:
            before = metrics.fetch(tofu.url)
            run = WrkRun(
                tofu.url,
                paths,
                duration_s=args.duration,
                connections=args.connections,
                threads=args.threads,
            )

            def load() -> None:
                try:
                    outcome["result"] = run.run(latest.append)
                except WrkError as exc:
                    outcome["error"] = exc

            worker = threading.Thread(target=load, name="wrk", daemon=True)
            t0 = time.monotonic()
            worker.start()
            while worker.is_alive():
                stats = group_stats(tofu.pgid)
                names.update({s.pid: s.name for s in stats})
                elapsed = time.monotonic() - t0
                series.append((elapsed, {s.pid: s.rss_bytes for s in stats}))
                done = latest[-1].responses if latest else 0
                total = sum(s.rss_bytes for s in stats)
                line = (
                    f"{elapsed:6.0f}s/{args.duration:g}s  {done} responses  "
                    f"RSS {fmt_bytes(total)} over {len(stats)} processes"
                )
                if sys.stderr.isatty():
                    print("\r" + line, end="", file=sys.stderr, flush=True)
                else:
                    print(line, file=sys.stderr, flush=True)
                worker.join(args.interval)
            if sys.stderr.isatty():
                print(file=sys.stderr)
            after = metrics.fetch(tofu.url)
        finally:
            tofu.stop()

    if "error" in outcome:
        print(f"bench.soak: {outcome['error']}", file=sys.stderr)
        return 1
    result = outcome["result"]
    assert isinstance(result, WrkResult)
    slopes = slopes_mb_per_min(series)
    delta = metrics.cache_delta(before, after) if before and after else None
    png = args.out / f"{stem}.png"
    plot(series, names, png, f"tofu RSS under the W2 mix ({args.duration:g} s)")
    first, last = series[0], series[-1]
    lines = [
        f"soak: {result.requests} requests in {result.duration_s:.0f} s "
        f"({result.rps:,.1f} req/s), errors {result.errors}",
        f"RSS total: start {sum(first[1].values()) / MB:.0f} MB, end "
        f"{sum(last[1].values()) / MB:.0f} MB, peak "
        f"{max(sum(r.values()) for _, r in series) / MB:.0f} MB",
        f"RSS slope over the second half: {slopes.get('total', 0):+.2f} MB/min in total",
    ]
    for pid, slope in slopes.items():
        if pid != "total":
            lines.append(f"  pid {pid} ({names.get(int(pid), '?')}): {slope:+.2f} MB/min")
    if delta is not None:
        lines.append(f"result-cache hit ratio {delta.hit_ratio:.1%}, renders {delta.renders:.0f}")
    lines.append(f"plot: {png}")
    print("\n".join(lines))
    report = {
        "date": f"{started_at:%Y-%m-%d %H:%M}",
        "command": "python -m bench.soak " + shlex.join(argv or sys.argv[1:]),
        "load": result.to_dict(),
        "slopes_mb_per_min": slopes,
        "cache": delta.to_dict() if delta else None,
        "names": {str(k): v for k, v in names.items()},
        "series": [[round(t, 2), {str(k): v for k, v in r.items()}] for t, r in series],
    }
    (args.out / f"{stem}.json").write_text(json.dumps(report, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
