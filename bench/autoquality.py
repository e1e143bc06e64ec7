"""Auto quality (``--auto-quality``) on the corpus at the W5 size mix: its constants, and the
numbers that decide whether it is the default.

    python -m bench.autoquality --photos ../shared/corpus/photos              # on vs off
    python -m bench.autoquality --photos ../shared/corpus/photos --calibrate  # the constants
    python -m bench.autoquality --photos ../shared/corpus/photos --metrics    # metric choice

Every render is tofu's own (``tofu.render.render``, the format as if negotiated), in process.

``--calibrate`` sweeps each format's quality over every photo and size (the mix's tokens
without their q) and prints: the median self-score (SSIM of the output against tofu's own
pixels before encoding, what the search measures) at the fixed defaults, the default target;
the same at the Save-Data defaults (its loss factor); the least-squares fit of the lowest
quality meeting the target against ln(detail), the first guess.

The default run renders each photo at each size of the mix (tokens as they are: a URL q wins
over auto quality) in JPEG, WebP and AVIF with auto quality off and on, and reports per format
and mode: mean bytes weighted by the mix, total bytes, worst and median SSIM against the
full-decode Lanczos-3 reference (``bench.quality``), worst and median self-score, CPU ms per
miss (``time.process_time`` of the render, the minimum of ``--repeat``: a noisy machine only
ever adds), its p99 over renditions, and the chosen qualities. Then the rule of issue 18:
default on only if it saves >= 15 % of bytes at an equal or better worst-case score and costs
<= 1.5x the CPU per miss.

``--metrics`` measures the candidate metrics on the corpus's encodings: CPU ms per call at the
output sizes, and their rank agreement (Spearman) with SSIMULACRA 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from bench.formats import decode
from bench.mix import DEFAULT_SIZE_MIX, format_size_mix, parse_size_mix
from bench.quality import references, ssimulacra2
from bench.workloads import find_photos
from tofu.formats import FORMATS
from tofu.negotiate import Negotiated
from tofu.render import RenderSettings, render
from tofu.render import autoquality as aq
from tofu.render.encode import encode
from tofu.transform import Fit, ImageFormat, Size
from tofu.urls import parse_size

ROOT = Path(__file__).resolve().parents[1]
LOSSY = (ImageFormat.JPEG, ImageFormat.WEBP, ImageFormat.AVIF)
BYTES_SAVED_MIN = 0.15
CPU_RATIO_MAX = 1.5


def rendered(data: bytes, size: Size, fmt: ImageFormat, settings: RenderSettings) -> tuple:
    """(rendition, CPU seconds) of one render of ``data`` as ``fmt`` negotiated."""
    negotiated = Negotiated(fmt, ImageFormat.WEBP)
    started = time.process_time()
    rendition = render(data, size, settings, negotiated)
    return rendition, time.process_time() - started


def own_image(data: bytes, size: Size) -> pyvips.Image:
    """tofu's pixels before encoding (its lossless PNG, decoded into memory)."""
    rendition = render(data, size, RenderSettings(), Negotiated(ImageFormat.PNG, ImageFormat.GIF))
    return pyvips.Image.new_from_buffer(rendition.body, "").copy_memory()


def own_pixels(data: bytes, size: Size) -> np.ndarray:
    return aq.pixels(own_image(data, size))


def without_quality(token: str) -> str:
    size = parse_size(token, 8192)
    if size.quality is None:
        return token
    return token.replace(f"q{size.quality}", "")


# --- calibration -------------------------------------------------------------------------------


def calibrate(photos: Sequence[Path], tokens: Sequence[str]) -> dict:
    sweep = {fmt: list(range(aq.BOUNDS[fmt][0], aq.BOUNDS[fmt][1] + 1, 2)) for fmt in LOSSY}
    at_default: dict[str, list[float]] = {f.value: [] for f in LOSSY}
    at_save_data: dict[str, list[float]] = {f.value: [] for f in LOSSY}
    curves: list[tuple[str, float, dict[int, float]]] = []  # format, detail, quality -> score
    for photo in photos:
        data = photo.read_bytes()
        for token in sorted({without_quality(t) for t in tokens}):
            size = parse_size(token, 8192)
            image = own_image(data, size)  # encoded at each quality as the pipeline encodes
            reference = aq.pixels(image)
            detail = aq.detail(reference)
            print(f"  {photo.name} {token} detail {detail:.2f}", file=sys.stderr)
            for fmt in LOSSY:
                spec = FORMATS[fmt]
                qualities = sorted({*sweep[fmt], spec.default_quality, spec.save_data_quality})
                curve = {}
                for q in qualities:
                    curve[q] = aq.score(reference, encode(image, fmt, q, RenderSettings()))
                at_default[fmt.value].append(curve[spec.default_quality])  # type: ignore[index]
                at_save_data[fmt.value].append(curve[spec.save_data_quality])  # type: ignore[index]
                curves.append((fmt.value, detail, curve))
    medians = {f: statistics.median(v) for f, v in at_default.items()}
    target = medians["jpeg"]  # WebP's and AVIF's defaults were set to look like JPEG q80
    save_data = {f: statistics.median(v) for f, v in at_save_data.items()}
    factor = statistics.fmean((1 - save_data[f]) / (1 - medians[f]) for f in medians)
    fits = {}
    for fmt in LOSSY:
        xs, ys, slopes = [], [], []
        for f, detail, curve in curves:
            if f != fmt.value:
                continue
            ordered = sorted(curve.items())
            meeting = [i for i, (q, s) in enumerate(ordered) if s >= target]
            xs.append(math.log(max(detail, 0.5)))
            ys.append(ordered[meeting[0]][0] if meeting else aq.BOUNDS[fmt][1])
            if meeting and meeting[0] > 0:  # the score per quality step where it crosses
                (q0, s0), (q1, s1) = ordered[meeting[0] - 1], ordered[meeting[0]]
                slopes.append((s1 - s0) / (q1 - q0))
        b, a = np.polyfit(xs, ys, 1)
        residual = [y - (a + b * x) for x, y in zip(xs, ys, strict=True)]
        fits[fmt.value] = {
            "a": round(float(a), 1),
            "b": round(float(b), 1),
            "residual_sd": round(statistics.pstdev(residual), 1),
            "needed_q_median": statistics.median(ys),
            "slope_median": round(statistics.median(slopes), 5) if slopes else None,
        }
    return {
        "median_score_at_defaults": medians,
        "target": round(target, 4),
        "median_score_at_save_data": save_data,
        "save_data_loss_factor": round(factor, 2),
        "guess_fit": fits,
    }


# --- on vs off ---------------------------------------------------------------------------------


@dataclass
class Row:
    format: str
    mode: str  # "fixed" | "auto"
    weighted_mean_bytes: float = 0.0
    total_bytes: int = 0
    ssim_worst: float = 1.0
    ssim_median: float = 0.0
    s2_worst: float = 100.0  # SSIMULACRA 2 against the same reference
    s2_median: float = 0.0
    self_worst: float = 1.0
    self_median: float = 0.0
    cpu_ms_mean: float = 0.0
    cpu_ms_p99: float = 0.0
    qualities: dict[str, int] = dataclasses.field(default_factory=dict)
    capped: int = 0
    renditions: int = 0


def compare(
    photos: Sequence[Path],
    mix: Sequence[tuple[str, float]],
    repeat: int,
    target: float,
    lower_only: bool = False,
) -> list[Row]:
    modes = {
        "fixed": RenderSettings(),
        "auto": RenderSettings(
            auto_quality=True, quality_target=target, auto_quality_lower_only=lower_only
        ),
    }
    weight_of = dict(mix)
    rows = {(fmt, mode): Row(fmt.value, mode) for fmt in LOSSY for mode in modes}
    acc: dict[tuple[ImageFormat, str], dict[str, list[float]]] = {
        key: {"ssim": [], "s2": [], "self": [], "cpu": [], "weighted": [], "weights": []}
        for key in rows
    }
    for photo in photos:
        data = photo.read_bytes()
        for token, _ in mix:
            size = parse_size(token, 8192)
            print(f"  {photo.name} {token}", file=sys.stderr)
            own = own_pixels(data, size)
            refs: list[np.ndarray] = []
            for (fmt, mode), row in rows.items():
                best = math.inf
                for _ in range(repeat):
                    rendition, cpu = rendered(data, size, fmt, modes[mode])
                    best = min(best, cpu)
                body = rendition.body
                if not refs:  # every format and mode has the same dimensions
                    crop = size.fit is Fit.COVER
                    refs = references(data, rendition.width, rendition.height, crop=crop)
                pixels = decode(body)
                scores = [_ssim(r, pixels) for r in refs]
                best_ref = refs[scores.index(max(scores))]
                a = acc[(fmt, mode)]
                a["ssim"].append(max(scores))
                a["s2"].append(ssimulacra2(best_ref, pixels))
                self_score = aq.score(own, body)
                a["self"].append(self_score)
                a["cpu"].append(best * 1000)
                a["weighted"].append(weight_of[token] * len(body))
                a["weights"].append(weight_of[token])
                row.total_bytes += len(body)
                q = str(rendition.quality)
                row.qualities[q] = row.qualities.get(q, 0) + 1
                if mode == "auto" and size.quality is None and self_score < target:
                    row.capped += 1
                row.renditions += 1
    for key, row in rows.items():
        a = acc[key]
        row.weighted_mean_bytes = sum(a["weighted"]) / sum(a["weights"])
        row.ssim_worst, row.ssim_median = min(a["ssim"]), statistics.median(a["ssim"])
        row.s2_worst, row.s2_median = min(a["s2"]), statistics.median(a["s2"])
        row.self_worst, row.self_median = min(a["self"]), statistics.median(a["self"])
        row.cpu_ms_mean = statistics.fmean(a["cpu"])
        row.cpu_ms_p99 = float(np.percentile(a["cpu"], 99))
    return list(rows.values())


def _ssim(reference: np.ndarray, image: np.ndarray) -> float:
    import fast_ssim

    return float(fast_ssim.ssim(np.ascontiguousarray(reference), image, data_range=255))


def verdict(rows: Sequence[Row]) -> dict[str, dict]:
    out = {}
    for fmt in LOSSY:
        fixed = next(r for r in rows if r.format == fmt.value and r.mode == "fixed")
        auto = next(r for r in rows if r.format == fmt.value and r.mode == "auto")
        saved = 1 - auto.weighted_mean_bytes / fixed.weighted_mean_bytes
        cpu = auto.cpu_ms_mean / fixed.cpu_ms_mean
        out[fmt.value] = {
            "bytes_saved": round(saved, 4),
            "worst_ssim_delta": round(auto.ssim_worst - fixed.ssim_worst, 4),
            "worst_ssimulacra2_delta": round(auto.s2_worst - fixed.s2_worst, 2),
            "cpu_ratio": round(cpu, 2),
            "meets": saved >= BYTES_SAVED_MIN
            and auto.ssim_worst >= fixed.ssim_worst
            and auto.s2_worst >= fixed.s2_worst
            and cpu <= CPU_RATIO_MAX,
        }
    return out


def markdown(rows: Sequence[Row], verdicts: dict[str, dict]) -> str:
    lines = [
        "| format | quality | mean bytes (mix) | total bytes | SSIM worst / median | "
        "SSIMULACRA 2 worst / median | self SSIM worst / median | CPU ms/miss mean / p99 | "
        "capped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.format} | {r.mode} | {r.weighted_mean_bytes:,.0f} | {r.total_bytes:,} | "
            f"{r.ssim_worst:.4f} / {r.ssim_median:.4f} | {r.s2_worst:.1f} / {r.s2_median:.1f} | "
            f"{r.self_worst:.4f} / {r.self_median:.4f} | {r.cpu_ms_mean:.1f} / "
            f"{r.cpu_ms_p99:.1f} | {r.capped} |"
        )
    lines += [
        "",
        "| format | bytes saved | worst SSIM change | worst SSIMULACRA 2 change | CPU ratio | "
        "meets the rule |",
        "|---|---|---|---|---|---|",
    ]
    for fmt, v in verdicts.items():
        lines.append(
            f"| {fmt} | {v['bytes_saved']:.1%} | {v['worst_ssim_delta']:+.4f} | "
            f"{v['worst_ssimulacra2_delta']:+.2f} | {v['cpu_ratio']:.2f}x | "
            f"{'yes' if v['meets'] else 'no'} |"
        )
    return "\n".join(lines)


# --- metric choice -----------------------------------------------------------------------------


def candidates() -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """Each metric as f(reference, distorted) over H x W x 3 uint8 arrays."""
    import blazediff_ssim
    import fast_ssim
    from skimage.metrics import structural_similarity

    def rgba(a: np.ndarray) -> bytes:
        return np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]).tobytes()

    def blaze(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
        def run(x: np.ndarray, y: np.ndarray) -> float:
            h, w = x.shape[:2]
            return float(blazediff_ssim.compare_rgba(rgba(x), rgba(y), w, h, metric=metric).score)

        return run

    return {
        "ssimulacra2": ssimulacra2,  # bench.quality's: the package's steps on arrays
        "skimage-ssim": lambda x, y: float(
            structural_similarity(x, y, channel_axis=2, data_range=255)
        ),
        "fast-ssim": lambda x, y: float(fast_ssim.ssim(x, y, data_range=255)),
        "blazediff-ssim": blaze("ssim"),
        "blazediff-ms-ssim": blaze("ms-ssim"),
        "blazediff-perceptual": blaze("perceptual-ssim"),
    }


def metric_choice(photos: Sequence[Path], tokens: Sequence[str]) -> dict:
    """Per candidate: CPU ms per call; Spearman rank agreement with SSIMULACRA 2 over every
    (photo, size, format, quality of low / middle / high) and over the photos and sizes at
    each format's default quality alone (what a per-image target relies on: one score
    meaning one perceived quality whatever the image); the longest another Python thread
    waits while it runs (a render thread holding the GIL stalls the event loop)."""
    metrics = candidates()
    scores: dict[str, list[float]] = {name: [] for name in metrics}
    at_default: dict[str, list[float]] = {name: [] for name in metrics}
    cpu: dict[str, list[float]] = {name: [] for name in metrics}
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for photo in photos:
        data = photo.read_bytes()
        for token in tokens:
            size = parse_size(without_quality(token), 8192)
            print(f"  {photo.name} {token}", file=sys.stderr)
            for fmt in LOSSY:
                low, high = aq.BOUNDS[fmt]
                default = FORMATS[fmt].default_quality
                for q in (low, (low + high) // 2, high, default):
                    size_q = dataclasses.replace(size, quality=q, format=fmt)
                    body = render(data, size_q, RenderSettings()).body
                    image = pyvips.Image.new_from_buffer(body, "")
                    crop = size.fit is Fit.COVER
                    ref = np.ascontiguousarray(
                        references(data, image.width, image.height, crop=crop)[0]
                    )
                    dist = decode(body)
                    pairs.append((ref, dist))
                    for name, metric in metrics.items():
                        started = time.process_time()
                        value = metric(ref, dist)
                        cpu[name].append((time.process_time() - started) * 1000)
                        (at_default if q == default else scores)[name].append(value)
    base, base_default = _ranks(scores["ssimulacra2"]), _ranks(at_default["ssimulacra2"])
    biggest = max(pairs, key=lambda p: p[0].size)
    return {
        name: {
            "cpu_ms_median": round(statistics.median(cpu[name]), 2),
            "spearman_vs_ssimulacra2": round(float(np.corrcoef(base, _ranks(v))[0, 1]), 3),
            "spearman_at_default_quality": round(
                float(np.corrcoef(base_default, _ranks(at_default[name]))[0, 1]), 3
            ),
            "longest_stall_ms": _longest_stall_ms(metrics[name], *biggest),
            "n": len(v) + len(at_default[name]),
        }
        for name, v in scores.items()
    }


def _longest_stall_ms(
    metric: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray
) -> float:
    """The longest this thread waits to wake from a 1 ms sleep while ``metric`` runs five
    times in another: about 1 ms when the metric lets go of the GIL, its own duration when it
    holds it (what an event loop beside a render thread would feel)."""
    import threading

    worker = threading.Thread(target=lambda: [metric(x, y) for _ in range(5)])
    longest = 0.0
    worker.start()
    last = time.perf_counter()
    while worker.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    return round(longest * 1000, 1)


def _ranks(values: Sequence[float]) -> np.ndarray:
    return np.argsort(np.argsort(np.asarray(values))).astype(float)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.autoquality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--photos", type=Path, default=ROOT / "samples", help="JPEG originals")
    p.add_argument("--sizes", default=format_size_mix(DEFAULT_SIZE_MIX), help="the size mix")
    p.add_argument("--limit", type=int, help="at most this many photos")
    p.add_argument("--repeat", type=int, default=3, help="renders per CPU timing (min taken)")
    p.add_argument("--target", type=float, default=aq.DEFAULT_TARGET, help="auto's target")
    p.add_argument("--lower-only", action="store_true", help="auto never above the fixed default")
    p.add_argument("--calibrate", action="store_true", help="derive the constants")
    p.add_argument("--metrics", action="store_true", help="metric speed and agreement")
    p.add_argument("--out", type=Path, help="write the results as JSON (and .md) here")
    args = p.parse_args(argv)

    pyvips.cache_set_max(0)
    photos = [ph.path for ph in find_photos(args.photos)][: args.limit]
    if not photos:
        print(f"no JPEG photos under {args.photos}", file=sys.stderr)
        return 2
    mix = parse_size_mix(args.sizes)
    tokens = [t for t, _ in mix]
    header = f"{len(photos)} photos from {args.photos}; sizes {args.sizes}"
    if args.calibrate:
        result: dict = calibrate(photos, tokens)
        text = json.dumps(result, indent=2)
    elif args.metrics:
        result = metric_choice(photos, tokens)
        text = (
            "| metric | CPU ms/call (median) | Spearman vs SSIMULACRA 2, all qualities | "
            "the same at default quality | longest stall of another thread, ms |\n"
            "|---|---|---|---|---|\n"
        )
        text += "\n".join(
            f"| {n} | {v['cpu_ms_median']} | {v['spearman_vs_ssimulacra2']} | "
            f"{v['spearman_at_default_quality']} | {v['longest_stall_ms']} |"
            for n, v in result.items()
        )
    else:
        rows = compare(photos, mix, args.repeat, args.target, args.lower_only)
        verdicts = verdict(rows)
        result = {"rows": [dataclasses.asdict(r) for r in rows], "verdict": verdicts}
        text = markdown(rows, verdicts)
    meta = {"photos": header, "target": args.target, "repeat": args.repeat}
    result = {"meta": {**meta, "lower_only": args.lower_only}, **result}
    print(header + "\n\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(header + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
