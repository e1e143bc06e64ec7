"""Load-test any tofu deployment with a realistic recipe-photo mix.

    python -m bench.load --url http://127.0.0.1:8080 --keys-from samples --duration 30s
    python -m bench.load --url https://img.example --keys recipes/1/a.jpg,recipes/2/b.jpg \\
        --secret "$TOFU_SECRET" --requests 5000 --concurrency 64
    python -m bench.load --url http://127.0.0.1:8080 --rate 200 --duration 1m

Keys get Zipf-distributed popularity (``--zipf-s``), sizes follow ``--sizes`` (an app's mix);
the sequence is computed here and wrk walks it. Prints live progress, then requests/s, latency
percentiles, statuses, bytes and — when the URL is a tofu node — the result-cache hit ratio from
the change in its ``/metrics`` over the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from bench import metrics
from bench.mix import (
    DEFAULT_SIZE_MIX,
    format_size_mix,
    keys_from_dir,
    parse_size_mix,
    popularity_summary,
    request_mix,
    tofu_paths,
)
from bench.units import fmt_bytes, fmt_ms, parse_duration
from bench.wrk import ProgressLine, WrkError, WrkResult, WrkRun, default_threads

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", required=True, help="base URL of the deployment")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument(
        "--keys-from",
        type=Path,
        help="directory laid out like the origin: every image in it is a key "
        "(default: samples/, what `make serve` serves)",
    )
    keys.add_argument("--keys", help="comma-separated origin keys")
    p.add_argument("--secret", help="sign every URL with this secret (tofu --secret)")
    p.add_argument(
        "--sizes",
        default=format_size_mix(DEFAULT_SIZE_MIX),
        help="size tokens with weights, TOKEN:WEIGHT,... (default: %(default)s)",
    )
    p.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent of key popularity")
    p.add_argument("--seed", type=int, default=1, help="seed of the request sequence")
    p.add_argument(
        "--list-length", type=int, default=100_000, help="requests pre-generated (then cycled)"
    )
    run = p.add_mutually_exclusive_group()
    run.add_argument("--duration", type=parse_duration, help="how long (default 30s)")
    run.add_argument("--requests", type=int, help="stop after about this many responses")
    p.add_argument("--concurrency", "-c", type=int, default=32, help="open connections")
    p.add_argument("--threads", "-t", type=int, default=default_threads(), help="wrk threads")
    p.add_argument(
        "--rate", type=float, default=0.0, help="target requests/s (default: as fast as possible)"
    )
    p.add_argument("--timeout", type=parse_duration, default=30.0, help="per-request timeout")
    p.add_argument(
        "--accept",
        help="Accept header, e.g. 'image/avif,image/webp,*/*' to exercise format negotiation",
    )
    p.add_argument("--header", "-H", action="append", default=[], help="extra header 'Name: value'")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    return p


def summary_lines(result: WrkResult, delta: metrics.CacheDelta | None) -> list[str]:
    lat = result.latency_ms
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items())) or "none"
    socket = {k: v for k, v in result.socket_errors.items() if v}
    lines = [
        f"requests   {result.requests} in {result.duration_s:.2f} s = {result.rps:,.1f} req/s",
        "latency    "
        + "  ".join(
            f"{name} {fmt_ms(lat.get(key))} ms"
            for name, key in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("max", "max"))
        ),
        f"statuses   {statuses}",
        "socket errors " + (", ".join(f"{k} {v}" for k, v in socket.items()) if socket else "none"),
        f"bytes      {fmt_bytes(result.bytes)} read, mean 2xx body "
        f"{fmt_bytes(result.mean_body_bytes)}",
    ]
    if delta is None:
        lines.append("cache      (no tofu /metrics at this URL)")
    else:
        ratio = "-" if math.isnan(delta.hit_ratio) else f"{delta.hit_ratio:.1%}"
        lines.append(
            f"cache      result hit ratio {ratio} (hits {delta.hits:.0f}, misses "
            f"{delta.misses:.0f}); renders {delta.renders:.0f}, origin fetches "
            f"{delta.origin_fetches:.0f}"
        )
    return lines


def headers_from(args: argparse.Namespace) -> dict[str, str]:
    headers = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep:
            raise SystemExit(f"--header {raw!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.accept:
        headers["Accept"] = args.accept
    return headers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.keys:
        keys = [k.strip().strip("/") for k in args.keys.split(",") if k.strip()]
    else:
        keys = keys_from_dir(args.keys_from or ROOT / "samples")
    sizes = parse_size_mix(args.sizes)
    pairs = request_mix(keys, sizes, args.list_length, s=args.zipf_s, seed=args.seed)
    paths = tofu_paths(pairs, args.secret)
    duration = args.duration or (3600.0 if args.requests else 30.0)
    shape = popularity_summary(pairs)
    print(
        f"{args.url}: {len(keys)} keys (Zipf s={args.zipf_s:g}: top key "
        f"{shape['top1_share']:.0%}, top 10 {shape['top10_share']:.0%} of requests) x "
        f"{len(sizes)} sizes = {shape['renditions']:.0f} renditions in the list; "
        f"{args.concurrency} connections, {args.threads} threads"
        + (f", {args.rate:g} req/s" if args.rate else "")
        + (f", {args.requests} requests" if args.requests else f", {duration:g} s"),
        file=sys.stderr,
    )
    before = metrics.fetch(args.url)
    run = WrkRun(
        args.url,
        paths,
        duration_s=duration,
        connections=args.concurrency,
        threads=args.threads,
        timeout_s=args.timeout,
        rate=args.rate,
        requests=args.requests or 0,
        headers=headers_from(args),
    )
    progress = ProgressLine(duration if not args.requests else math.inf)
    try:
        result = run.run(progress)
    except WrkError as exc:
        progress.finish()
        print(f"bench.load: {exc}", file=sys.stderr)
        return 1
    progress.finish()
    after = metrics.fetch(args.url) if before is not None else None
    delta = metrics.cache_delta(before, after) if before and after else None
    for line in summary_lines(result, delta):
        print(line)
    if args.json:
        out = {"url": args.url, **result.to_dict(), "cache": delta.to_dict() if delta else None}
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0 if result.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())
