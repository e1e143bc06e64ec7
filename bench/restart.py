"""What a restart costs a node, with the disk result tier and without.

    python -m bench.restart [--photos DIR] [--warm 60s] [--after 30s] [--concurrency 8]

For each variant (``--disk-cache`` on a fresh directory, then memory only) a node is started
over the photos, the Zipf mix of ``bench.load`` is replayed for ``--warm``, the node is stopped
(SIGTERM) and started again on the same directory, and the same mix is replayed for ``--after``
(30 s: the window the CDN's misses arrive in after a deploy). Printed per pass: responses,
renders per response, p50/p99 latency, and how responses were answered (memory hit, disk,
render). Each photo is served under ``--names`` keys (hard links), so the mix has more
renditions than a handful of photos give.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import metrics
from bench.mix import DEFAULT_SIZE_MIX, keys_from_dir, popularity_summary, request_mix, tofu_paths
from bench.servers import Running, start_tofu
from bench.units import fmt_ms, parse_duration
from bench.wrk import WrkRun

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Pass:
    variant: str  # "disk tier" or "memory only"
    when: str  # "cold start" or "after restart"
    responses: int
    errors: int
    renders: float
    p50_ms: float
    p99_ms: float
    answered: dict[str, float]  # tofu_requests_total by cache label
    disk_hit_ms: float  # mean time to read a rendition from the disk tier (its histogram)

    @property
    def renders_per_response(self) -> float:
        return self.renders / self.responses if self.responses else float("nan")

    def line(self) -> str:
        answered = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.answered.items()) if v)
        return (
            f"{self.variant:11} {self.when:13} {self.responses:6d} responses "
            f"({self.errors} errors), {self.renders_per_response:.3f} renders/response, "
            f"p50 {fmt_ms(self.p50_ms)} ms, p99 {fmt_ms(self.p99_ms)} ms; {answered}"
            + (f"; disk hits {fmt_ms(self.disk_hit_ms)} ms mean" if self.disk_hit_ms else "")
        )


def origin_with_names(photos: Path, names: int, directory: Path) -> Path:
    """``photos`` served under ``names`` keys each (``n/NAME``), as hard links (copies where
    links are impossible)."""
    origin = directory / "origin"
    for key in keys_from_dir(photos):
        for n in range(names):
            target = origin / str(n) / key
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(photos / key, target)
            except OSError:
                shutil.copyfile(photos / key, target)
    return origin


def replay(
    node: Running,
    paths: list[str],
    seconds: float,
    args: argparse.Namespace,
    variant: str,
    when: str,
) -> Pass:
    before = metrics.fetch(node.url) or {}
    result = WrkRun(
        node.url,
        paths,
        duration_s=seconds,
        connections=args.concurrency,
        threads=2,
        timeout_s=30,
        rate=args.rate,
    ).run()
    after = metrics.fetch(node.url) or {}

    def delta(name: str, **labels: str) -> float:
        return metrics.value(after, name, **labels) - metrics.value(before, name, **labels)

    answered = {
        cache: delta("tofu_requests_total", cache=cache)
        for cache in ("hit", "miss", "coalesced", "peer", "disk", "store")
    }
    return Pass(
        variant,
        when,
        result.requests,
        result.errors,
        delta("tofu_renders_total"),
        result.latency_ms.get("p50", float("nan")),
        result.latency_ms.get("p99", float("nan")),
        answered,
        1000
        * delta("tofu_tier_hit_seconds_sum", tier="disk")
        / max(1.0, delta("tofu_tier_hit_seconds_count", tier="disk")),
    )


def run_variant(
    variant: str, origin: Path, paths: list[str], args: argparse.Namespace, work: Path
) -> list[Pass]:
    disk = work / "disk"
    extra = ["--drain-seconds", "0", "--negotiate", "none"]
    if variant == "disk tier":
        extra += ["--disk-cache", str(disk), "--disk-cache-size", args.disk_cache_size]
    passes = []
    for when, seconds in (("cold start", args.warm), ("after restart", args.after)):
        node = start_tofu(
            variant.replace(" ", "-"), origin, work, workers=args.workers, extra=extra
        )
        try:
            passes.append(replay(node, paths, seconds, args, variant, when))
            print(passes[-1].line(), flush=True)
        finally:
            node.stop()
    return passes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    p.add_argument(
        "--photos",
        type=Path,
        default=ROOT / "samples",
        help="originals (default: samples/; the corpus is ../shared/corpus/photos)",
    )
    p.add_argument("--names", type=int, default=10, help="keys per photo")
    p.add_argument("--warm", type=parse_duration, default=60.0, help="replay before the restart")
    p.add_argument("--after", type=parse_duration, default=30.0, help="replay after it")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests/s, open loop, as a CDN's misses arrive (default: closed loop, flat out)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default: tofu's)")
    p.add_argument("--disk-cache-size", default="1G")
    p.add_argument("--zipf-s", type=float, default=1.0)
    p.add_argument("--variants", default="disk tier,memory only")
    p.add_argument("--json", type=Path, help="also write every pass as JSON here")
    args = p.parse_args(argv)
    passes: list[Pass] = []
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        origin = origin_with_names(args.photos, args.names, Path(tmp))
        keys = keys_from_dir(origin)
        pairs = request_mix(keys, DEFAULT_SIZE_MIX, 100_000, s=args.zipf_s, seed=1)
        shape = popularity_summary(pairs)
        print(
            f"{len(keys)} keys, {shape['renditions']:.0f} renditions in the mix; "
            f"{args.workers or 'default'} workers, {args.concurrency} connections"
            + (f" at {args.rate:g} req/s; " if args.rate else "; ")
            + f"warm {args.warm:g} s, after the restart {args.after:g} s",
            file=sys.stderr,
        )
        paths = tofu_paths(pairs)
        for variant in (v.strip() for v in args.variants.split(",")):
            work = Path(tmp) / variant.replace(" ", "-")
            work.mkdir()
            passes += run_variant(variant, origin, paths, args, work)
    if args.json:
        rows = [{**asdict(one), "renders_per_response": one.renders_per_response} for one in passes]
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(one.responses for one in passes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
