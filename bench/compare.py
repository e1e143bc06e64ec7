"""tofu against thumbor, sharp, nginx image_filter and the ceiling, on the same originals and
operations.

    python -m bench.compare --photos ../shared/corpus/photos --out bench/results/
    python -m bench.compare --only W1,W3 --servers tofu,ceiling --duration 5s   # a quick look

For each workload (W1 miss path, W2 realistic mix, W3 hit path, W4 big originals) and each
server configuration it applies to: start the server fresh, warm it up, run wrk, and measure
requests/s, latency, CPU seconds of the server's whole process tree per request, peak RSS,
mean output bytes and errors; then fetch its output for every photo once and score it (SSIM,
``bench.quality``). The miss-path workloads also get the decode-only floor (``bench.floor``).
Writes ``compare-<date>.md`` (tables, ratios), ``.json`` and PNG
charts into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench import metrics
from bench.floor import Floor, decode_floor
from bench.formats import tofu_per_format
from bench.machine import machine_info, tofu_versions
from bench.mix import DEFAULT_SIZE_MIX, format_size_mix, parse_size_mix
from bench.procs import RssSampler, group_cpu_seconds, settle
from bench.quality import Scorer
from bench.report import Row, WorkloadInfo, write_report
from bench.servers import (
    SHARP_MATCHED,
    SHARP_NEGOTIATE,
    THUMBOR_AUTO_AVIF,
    THUMBOR_AUTO_WEBP,
    Running,
    ServerError,
    cores,
    nginx_version,
    sharp_version,
    start_ceiling,
    start_nginx,
    start_sharp,
    start_thumbor,
    start_tofu,
    thumbor_version,
)
from bench.targets import Kind, path_for, paths_for
from bench.units import (
    parse_duration,
    parse_duration_or_zero,
    parse_per_workload,
    short_run_warning,
)
from bench.workloads import (
    ALL_SERVERS,
    BIG_MEGAPIXELS,
    W3_TARGET_BYTES,
    WORKLOADS,
    Origin,
    Workload,
    find_photos,
    pairs_for,
    prepare_origin,
    quality_pairs,
    select,
    split_big,
    w3_token,
)
from bench.wrk import ProgressLine, WrkError, WrkRun, default_threads, wrk_version

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--photos", type=Path, default=ROOT / "samples", help="JPEG originals")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="report dir")
    p.add_argument("--only", help="workloads to run, e.g. W1,W3 (default: all)")
    p.add_argument(
        "--servers",
        help="server configurations (a name or a family: tofu = tofu,tofu-percore); of "
        + ", ".join(ALL_SERVERS),
    )
    p.add_argument(
        "--duration", type=parse_duration, help="measured time per server, every workload"
    )
    p.add_argument(
        "--durations",
        default="",
        help="per workload, e.g. W1=20s,W2=1m (defaults: W1 30s, W2 60s, W3 20s, W4 30s)",
    )
    p.add_argument("--connections", type=int, help="connections, every workload")
    p.add_argument(
        "--connections-per",
        default="",
        help="per workload, e.g. W3=64 (defaults: W1 8, W2 16, W3 32, W4 4)",
    )
    p.add_argument(
        "--warmup", type=parse_duration_or_zero, default=3.0, help="wrk warm-up per server"
    )
    p.add_argument("--threads", type=int, default=default_threads(), help="wrk threads")
    p.add_argument("--timeout", type=parse_duration, default=30.0, help="wrk request timeout")
    p.add_argument("--keys", type=int, default=200, help="W1/W2 virtual keys over the photos")
    p.add_argument("--big-keys", type=int, default=64, help="W4 virtual keys over big photos")
    p.add_argument("--zipf-s", type=float, default=1.0, help="W2 Zipf exponent")
    p.add_argument("--sizes", default=format_size_mix(DEFAULT_SIZE_MIX), help="W2 size mix")
    p.add_argument("--list-length", type=int, default=50_000, help="W2 pre-generated requests")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--big-mp", type=float, default=BIG_MEGAPIXELS, help="W4: megapixels from")
    p.add_argument("--w3-bytes", type=int, default=W3_TARGET_BYTES, help="W3 rendition size")
    p.add_argument("--thumbor-processes", type=int, help="default: the number of cores")
    p.add_argument("--tofu-args", default="", help="extra `tofu serve` flags for every tofu")
    p.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier tofu (e.g. `git worktree add /tmp/base COMMIT`): adds a "
        "tofu-baseline row after tofu's in every workload, for before/after in one run",
    )
    p.add_argument("--tag", help="report file stem (default compare-YYYY-MM-DD-HHMM)")
    p.add_argument("--workdir", type=Path, help="temporary origin and logs (default: a temp dir)")
    p.add_argument(
        "--no-quality", action="store_true", help="skip the SSIM pass after each server's run"
    )
    p.add_argument(
        "--format-repeat",
        type=int,
        default=3,
        help="W5: renders per rendition for tofu's per-format rows (the minimum encode time)",
    )
    return p


class Bench:
    """Runs the selected workloads and collects rows."""

    def __init__(self, args: argparse.Namespace, origin: Origin, workdir: Path) -> None:
        self.args = args
        self.origin = origin
        self.workdir = workdir
        self.static_root = workdir / "static"
        self.w3_token = "280x194c"
        self.w3_bytes = 0
        self.durations = parse_per_workload(args.durations, parse_duration)
        self.connections = parse_per_workload(args.connections_per, int)
        self.tofu_extra = shlex.split(args.tofu_args)
        self.scorer = Scorer(origin.root)

    def duration(self, wl: Workload) -> float:
        return float(self.durations.get(wl.name) or self.args.duration or wl.duration_s)  # type: ignore[arg-type]

    def conns(self, wl: Workload) -> int:
        return int(self.connections.get(wl.name) or self.args.connections or wl.connections)  # type: ignore[arg-type]

    def start(self, server: str, wl: Workload) -> Running:
        root, work = self.origin.root, self.workdir
        cache = None if wl.cached else "0"
        name = f"{wl.name}-{server}"
        browser = bool(wl.accept)
        starters: dict[str, Callable[[], Running]] = {
            "tofu": lambda: start_tofu(name, root, work, cache_size=cache, extra=self.tofu_extra),
            "tofu-baseline": lambda: start_tofu(
                name, root, work, cache_size=cache, extra=self.tofu_extra, root=self.args.baseline
            ),
            "tofu-auto": lambda: start_tofu(
                name, root, work, cache_size=cache, extra=[*self.tofu_extra, "--auto-quality"]
            ),
            "tofu-percore": lambda: start_tofu(
                name, root, work, workers=cores(), cache_size=cache, extra=self.tofu_extra
            ),
            "thumbor": lambda: start_thumbor(
                name,
                root,
                work,
                result_storage=False,
                processes=self.args.thumbor_processes,
                extra_config=THUMBOR_AUTO_AVIF if browser else "",
            ),
            "thumbor-webp": lambda: start_thumbor(
                name,
                root,
                work,
                result_storage=False,
                processes=self.args.thumbor_processes,
                extra_config=THUMBOR_AUTO_WEBP,
            ),
            "thumbor-rs": lambda: start_thumbor(
                name, root, work, result_storage=True, processes=self.args.thumbor_processes
            ),
            "nginx-if": lambda: start_nginx(name, "image_filter", root, work),
            "nginx-if-cache": lambda: start_nginx(name, "cache", root, work),
            "nginx-static": lambda: start_nginx(name, "static", self.static_root, work),
            "sharp": lambda: start_sharp(
                name, root, work, options=SHARP_NEGOTIATE if browser else []
            ),
            "sharp-matched": lambda: start_sharp(name, root, work, options=SHARP_MATCHED),
            "ceiling": lambda: start_ceiling(name, root, work),
        }
        return starters[server]()

    def paths(self, wl: Workload, kind: Kind) -> list[str]:
        pairs = self.pairs(wl)
        return paths_for(kind, pairs, explicit_quality=wl.explicit_quality)

    def pairs(self, wl: Workload) -> list[tuple[str, str]]:
        return pairs_for(
            wl.name,
            self.origin,
            list_length=self.args.list_length,
            sizes=parse_size_mix(self.args.sizes),
            zipf_s=self.args.zipf_s,
            seed=self.args.seed,
            w3_token_=self.w3_token,
        )

    def floor(self, wl: Workload) -> Floor | None:
        """The decode-only floor of a miss-path workload's photos at its one size; None when
        the workload caches, mixes sizes (W5) or has no photo libjpeg-turbo decodes."""
        pairs = self.quality_pairs(wl)
        tokens = {token for _, token in pairs}
        if wl.cached or len(tokens) != 1:
            return None
        (token,) = tokens
        return decode_floor([(self.origin.root / key).read_bytes() for key, _ in pairs], token)

    def per_format(self, wl: Workload) -> list[dict]:
        """W5: tofu's JPEG, WebP and AVIF on the workload's photos and sizes, in process."""
        if not wl.accept or self.args.no_quality:
            return []
        originals = [(self.origin.root / key).read_bytes() for key in self.origin.photo_keys]
        tokens = list(dict.fromkeys(token for _, token in self.quality_pairs(wl)))
        print(f"{wl.name}: tofu per format, in process", file=sys.stderr)
        return tofu_per_format(originals, tokens, repeat=self.args.format_repeat)

    def quality_pairs(self, wl: Workload) -> list[tuple[str, str]]:
        return quality_pairs(
            wl.name, self.origin, sizes=parse_size_mix(self.args.sizes), w3_token_=self.w3_token
        )

    def score(self, wl: Workload, running: Running, row: Row) -> None:
        """Fetch and score the server's output for every photo of the workload once."""
        quality = self.scorer.run(
            running.url,
            self.quality_pairs(wl),
            lambda key, token: path_for(
                running.kind, key, token, explicit_quality=wl.explicit_quality
            ),
            headers=self.headers(wl),
            with_ssimulacra2=bool(wl.accept),
        )
        row.ssim_worst, row.ssim_mean = quality.worst, quality.mean
        row.dims, row.chroma = quality.dims, quality.chroma
        row.formats = quality.formats
        row.ssimulacra2_worst = quality.ssimulacra2_worst
        row.ssimulacra2_mean = quality.ssimulacra2_mean
        if quality.failures:
            shown = "; ".join(quality.failures[:3])
            row.notes.append(f"quality pass: {len(quality.failures)} failed ({shown})")

    @staticmethod
    def headers(wl: Workload) -> dict[str, str]:
        return {"Accept": wl.accept} if wl.accept else {}

    def prepare_w3(self) -> None:
        """Pick the rendition near --w3-bytes and write it as the static file nginx serves."""
        from tofu.render import RenderSettings, render
        from tofu.urls import parse_size

        data = (self.origin.root / self.origin.photo_keys[0]).read_bytes()
        self.w3_token, self.w3_bytes = w3_token(data, self.args.w3_bytes)
        body = render(data, parse_size(self.w3_token, 4096), RenderSettings()).body
        self.static_root.mkdir(parents=True, exist_ok=True)
        (self.static_root / "rendition.jpg").write_bytes(body)

    def measure(self, wl: Workload, server: str) -> Row:
        row = Row(wl.name, server)
        try:
            running = self.start(server, wl)
        except (ServerError, OSError, subprocess.SubprocessError) as exc:
            row.skipped = f"did not start ({str(exc).splitlines()[0]})"
            print(f"  {server}: {row.skipped}", file=sys.stderr)
            return row
        row.notes += running.notes
        try:
            self._measure(wl, running, row)
            if not self.args.no_quality:
                self.score(wl, running, row)
        except WrkError as exc:
            row.skipped = f"wrk failed ({str(exc).splitlines()[0]})"
        finally:
            running.stop()
        return row

    def _measure(self, wl: Workload, running: Running, row: Row) -> None:
        paths = self.paths(wl, running.kind)
        status = prime(running.url + paths[0], self.headers(wl))
        if status != 200:
            row.notes.append(f"first request answered {status}")
        duration = self.duration(wl)
        conns = self.conns(wl)
        common = {
            "connections": conns,
            "threads": self.args.threads,
            "timeout_s": self.args.timeout,
            "headers": self.headers(wl),
        }
        if self.args.warmup > 0:
            # Start the warm-up elsewhere in the list, so the measured walk begins cold where it
            # would (W1/W4) and W2's warm-up is just more of the same mix.
            offset = len(paths) // 2
            warm = paths[offset:] + paths[:offset]
            WrkRun(running.url, warm, duration_s=self.args.warmup, **common).run()
            settle(running.pgid)  # renders the warm-up left queued finish before measuring
        before = metrics.fetch(running.url) if running.kind is Kind.TOFU else None
        cpu_before = group_cpu_seconds(running.pgid)
        progress = ProgressLine(duration, f"  {wl.name} {running.name.split('-', 1)[1]:<15}")
        with RssSampler(running.pgid, 0.2) as rss:
            result = WrkRun(running.url, paths, duration_s=duration, **common).run(progress)
        progress.finish()
        cpu = group_cpu_seconds(running.pgid) - cpu_before
        if before is not None:
            after = metrics.fetch(running.url)
            if after is not None:
                delta = metrics.cache_delta(before, after)
                row.hit_ratio = delta.hit_ratio
                row.renders = delta.renders
        lat = result.latency_ms
        row.rps = result.rps
        row.p50_ms, row.p90_ms = lat.get("p50", math.nan), lat.get("p90", math.nan)
        row.p99_ms, row.max_ms = lat.get("p99", math.nan), lat.get("max", math.nan)
        row.cpu_ms_per_req = cpu * 1000 / result.requests if result.requests else math.nan
        row.peak_rss_mb = rss.peak_bytes / (1 << 20)
        row.mean_bytes = result.mean_body_bytes
        row.requests = result.requests
        row.errors = result.errors
        row.duration_s = result.duration_s
        row.statuses = {str(k): v for k, v in sorted(result.statuses.items())}
        if any(result.socket_errors.values()):
            row.notes.append(
                "socket errors " + ", ".join(f"{k} {v}" for k, v in result.socket_errors.items())
            )
        print(
            f"  {wl.name} {row.server:<15} {row.rps:9.1f} req/s  p50 {row.p50_ms:8.1f} ms  "
            f"p99 {row.p99_ms:8.1f} ms  cpu {row.cpu_ms_per_req:7.2f} ms/req  "
            f"rss {row.peak_rss_mb:6.0f} MB  errors {row.errors}",
            file=sys.stderr,
        )


def prime(url: str, headers: dict[str, str] | None = None) -> int:
    """One request before the load (and the rendition cached where the server caches)."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wanted = [w.strip().upper() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    server_filter = [s.strip() for s in args.servers.split(",")] if args.servers else None
    if server_filter and not select(ALL_SERVERS, server_filter):
        print(f"--servers matches none of {', '.join(ALL_SERVERS)}", file=sys.stderr)
        return 2

    photos = find_photos(args.photos)
    if not photos:
        print(f"no JPEG photos under {args.photos}", file=sys.stderr)
        return 2
    ordinary, big = split_big(photos, args.big_mp)
    notes: dict[str, str] = {}
    if not ordinary:
        ordinary = list(big)
        notes["W1"] = notes["W2"] = "Every photo is big; W1-W3 use them too."
    started = datetime.now()
    stem = args.tag or f"compare-{started:%Y-%m-%d-%H%M}"

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cmp-")))
        origin = prepare_origin(workdir / "origin", ordinary, big, args.keys, args.big_keys)
        bench = Bench(args, origin, workdir)
        rows: list[Row] = []
        infos: list[WorkloadInfo] = []
        for name in wanted:
            wl = WORKLOADS[name]
            servers = select(wl.servers, server_filter)
            if args.baseline and "tofu" in servers:
                servers.insert(servers.index("tofu") + 1, "tofu-baseline")
            if not servers:
                continue
            note = notes.get(name, "")
            if name == "W3":
                bench.prepare_w3()
                note += (
                    f" Rendition: {origin.photo_keys[0]} at {bench.w3_token} "
                    f"({bench.w3_bytes} bytes from tofu)."
                )
            if name == "W4" and not origin.big_keys:
                note += f" No photo of {args.big_mp:g} MP or more in {args.photos}: skipped."
                rows += [Row(name, s, skipped="no big photo") for s in servers]
            floor = bench.floor(wl)
            info = WorkloadInfo(
                name,
                wl.title,
                bench.duration(wl),
                bench.conns(wl),
                wl.baseline,
                wl.reference,
                note.strip(),
                peer=wl.peer,
                floor_ms=floor.mean_ms if floor else None,
                floor_note=floor.describe() if floor else "",
                accept=wl.accept,
                per_format=bench.per_format(wl),
            )
            infos.append(info)
            if name == "W4" and not origin.big_keys:
                print(f"{name}: skipped, no big photo", file=sys.stderr)
                continue
            print(
                f"{name} — {wl.title} ({info.duration_s:g}s, {info.connections} conns)",
                file=sys.stderr,
            )
            if warning := short_run_warning(info.duration_s, wl.duration_s):
                print(f"warning: {name}: {warning}", file=sys.stderr)
            for server in servers:
                rows.append(bench.measure(wl, server))

    versions = {
        **tofu_versions(),
        "thumbor": thumbor_version(),
        "sharp": sharp_version(),
        "nginx": nginx_version(),
        "wrk": wrk_version(),
    }
    results = {
        "meta": {
            "date": f"{started:%Y-%m-%d %H:%M}",
            "machine": machine_info(),
            "versions": versions,
            "command": "python -m bench.compare " + shlex.join(argv or sys.argv[1:]),
            "photos": f"{args.photos} ({len(ordinary)} photos, {len(big)} of "
            f"{args.big_mp:g} MP or more); {args.keys} virtual keys for W1/W2, "
            f"{args.big_keys} for W4",
            "load": f"wrk, {args.threads} threads, warm-up {args.warmup:g}s per server; W2: "
            f"Zipf s={args.zipf_s:g}, sizes {args.sizes}, seed {args.seed}",
        },
        "workloads": [info.__dict__ for info in infos],
        "rows": [r.to_dict() for r in rows],
    }
    md, js = write_report(results, args.out, stem)
    print(md.read_text())
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
