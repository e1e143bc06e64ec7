"""Format savings: bytes, SSIM and encode time of JPEG, WebP and AVIF at tofu's defaults.

    python -m bench.formats --photos ../shared/corpus/photos
    python -m bench.formats --photos samples --sizes 750x500c --sweep    # also search qualities

For each photo and size, tofu renders it (``tofu.render.render``, the format as if negotiated,
quality from ``DEFAULT_QUALITY``) and the output is compared with a reference: the original
fully decoded (no shrink-on-load), resized with a Lanczos3 kernel and centre-cropped, never
compressed. ``uncompressed`` is tofu's own pipeline before encoding against the same reference:
the SSIM the resize alone reaches, the ceiling for every format. ``--sweep`` finds, per format,
the lowest quality whose mean SSIM reaches JPEG's at its default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips
from skimage.metrics import structural_similarity

from tofu.render import RenderSettings
from tofu.render.encode import DEFAULT_QUALITY, encode
from tofu.render.steps import crop_focal, flatten, plan, probe, thumbnail, to_8bit
from tofu.transform import ImageFormat
from tofu.urls import parse_size

ROOT = Path(__file__).resolve().parents[1]
FORMATS = (ImageFormat.JPEG, ImageFormat.WEBP, ImageFormat.AVIF)
SWEEP = {
    ImageFormat.WEBP: tuple(range(50, 96, 4)),
    ImageFormat.AVIF: tuple(range(30, 81, 4)),
}


def to_array(image: pyvips.Image) -> np.ndarray:
    """An 8-bit sRGB image as an H x W x 3 array (alpha dropped, grey expanded)."""
    if image.hasalpha():
        image = image.extract_band(0, n=image.bands - 1)
    if image.bands == 1:
        image = image.bandjoin([image, image])
    if image.format != "uchar":
        image = image.cast("uchar")
    data = image.write_to_memory()
    return np.ndarray(buffer=data, dtype=np.uint8, shape=(image.height, image.width, image.bands))


def decode(body: bytes) -> np.ndarray:
    return to_array(pyvips.Image.new_from_buffer(body, "").colourspace("srgb"))


def full_decode(data: bytes) -> pyvips.Image:
    """The original decoded in full (no shrink-on-load), autorotated, in sRGB."""
    image = pyvips.Image.new_from_buffer(data, "").autorot()
    if image.get_typeof("icc-profile-data"):
        return image.icc_transform("srgb")
    if image.interpretation != "srgb":
        return image.colourspace("srgb")
    return image


def cover(data: bytes, width: int, height: int) -> pyvips.Image:
    """The original, fully decoded, in sRGB, Lanczos3-resized to cover ``width`` x ``height``."""
    image = full_decode(data)
    scale = max(width / image.width, height / image.height)
    resized = image.resize(scale, kernel="lanczos3")
    if resized.width < width or resized.height < height:  # rounding: a hair more
        scale *= 1 + 1 / min(image.width, image.height)
        resized = image.resize(scale, kernel="lanczos3")
    return resized


def lanczos_reference(data: bytes, width: int, height: int) -> np.ndarray:
    """The original, fully decoded, in sRGB, Lanczos3-resized to cover ``width`` x ``height``
    and centre-cropped to it."""
    resized = cover(data, width, height)
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return to_array(resized.crop(left, top, width, height))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    return float(structural_similarity(reference, image, channel_axis=2, data_range=255))


def pipeline(data: bytes, token: str, settings: RenderSettings) -> pyvips.Image:
    """tofu's render steps up to (not including) encoding, pixels computed into memory."""
    size = parse_size(token, settings.max_output_side)
    source = probe(data, settings)
    geometry = plan(source, size, settings)
    image = crop_focal(thumbnail(data, source, geometry), geometry)
    image = flatten(to_8bit(image), ImageFormat.JPEG)
    return image.copy_memory()


@dataclass
class Sample:
    photo: str
    token: str
    format: str  # an ImageFormat value, or "uncompressed"
    quality: int | None
    bytes: int
    ssim: float
    encode_ms: float


def measure(
    data: bytes,
    photo: str,
    token: str,
    settings: RenderSettings,
    qualities: dict[ImageFormat, Sequence[int | None]],
    repeat: int = 3,
) -> list[Sample]:
    image = pipeline(data, token, settings)
    reference = lanczos_reference(data, image.width, image.height)
    samples = [Sample(photo, token, "uncompressed", None, 0, ssim(reference, to_array(image)), 0)]
    for fmt, qs in qualities.items():
        for q in qs:
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                body = encode(image, fmt, q, settings)
                times.append((time.perf_counter() - started) * 1000)
            quality = q or DEFAULT_QUALITY[fmt]
            score = ssim(reference, decode(body))
            samples.append(Sample(photo, token, fmt.value, quality, len(body), score, min(times)))
    return samples


def summarise(samples: Sequence[Sample]) -> dict[tuple[str, str, int | None], dict[str, float]]:
    """Per (size, format, quality): mean bytes, SSIM, encode ms, and bytes vs JPEG (the mean
    of per-photo ratios against JPEG at its default quality)."""
    jpeg = {
        (s.photo, s.token): s.bytes
        for s in samples
        if s.format == "jpeg" and s.quality == DEFAULT_QUALITY[ImageFormat.JPEG]
    }
    groups: dict[tuple[str, str, int | None], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.token, s.format, s.quality), []).append(s)
    out = {}
    for key, group in groups.items():
        ratios = [s.bytes / jpeg[(s.photo, s.token)] for s in group if jpeg.get((s.photo, s.token))]
        out[key] = {
            "n": len(group),
            "bytes": statistics.fmean(s.bytes for s in group),
            "ssim": statistics.fmean(s.ssim for s in group),
            "ssim_min": min(s.ssim for s in group),
            "encode_ms": statistics.fmean(s.encode_ms for s in group),
            "vs_jpeg": statistics.fmean(ratios) if ratios and key[1] != "uncompressed" else None,
        }
    return out


def markdown(summary: dict, tokens: Sequence[str], defaults_only: bool = True) -> str:
    lines = [
        "| size | format | quality | mean bytes | vs JPEG | mean SSIM | min SSIM | encode ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {"uncompressed": 0, "jpeg": 1, "webp": 2, "avif": 3}
    for (token, fmt, quality), s in sorted(
        summary.items(), key=lambda kv: (tokens.index(kv[0][0]), order[kv[0][1]], kv[0][2] or 0)
    ):
        if defaults_only and fmt != "uncompressed" and quality != DEFAULT_QUALITY[ImageFormat(fmt)]:
            continue
        vs = "-" if s["vs_jpeg"] is None else f"{s['vs_jpeg']:.0%}"
        lines.append(
            f"| {token} | {fmt} | {quality or '-'} | {s['bytes']:,.0f} | {vs} | {s['ssim']:.4f} "
            f"| {s['ssim_min']:.4f} | {s['encode_ms']:.1f} |"
        )
    return "\n".join(lines)


def savings(summary: dict, tokens: Sequence[str]) -> dict[str, float]:
    """Mean byte savings vs JPEG of WebP and AVIF at their defaults, over every size."""
    out = {}
    for fmt in (ImageFormat.WEBP, ImageFormat.AVIF):
        ratios = [
            summary[(t, fmt.value, DEFAULT_QUALITY[fmt])]["vs_jpeg"]
            for t in tokens
            if (t, fmt.value, DEFAULT_QUALITY[fmt]) in summary
        ]
        if ratios:
            out[fmt.value] = 1 - statistics.fmean(ratios)
    return out


def matching_quality(summary: dict, tokens: Sequence[str], fmt: ImageFormat) -> int | None:
    """The lowest swept quality of ``fmt`` whose SSIM, averaged over sizes, reaches JPEG's."""
    jpeg_q = DEFAULT_QUALITY[ImageFormat.JPEG]
    target = statistics.fmean(summary[(t, "jpeg", jpeg_q)]["ssim"] for t in tokens)
    for q in sorted({q for (_, f, q) in summary if f == fmt.value}):
        scores = [
            summary[(t, fmt.value, q)]["ssim"] for t in tokens if (t, fmt.value, q) in summary
        ]
        if scores and statistics.fmean(scores) >= target:
            return q
    return None


def tofu_per_format(
    originals: Sequence[bytes], tokens: Sequence[str], repeat: int = 3
) -> list[dict[str, float | str]]:
    """W5's per-format rows for tofu alone, in process: each original at each size through
    tofu's whole render (``tofu.render.render``, the format as if negotiated, its default
    quality or the token's q): the encode phase in ms (the minimum of ``repeat`` renders of
    ``Rendition.encode_seconds``), bytes, and SSIM against the full-decode reference
    (``bench.quality``), as means over the renditions (SSIM also the worst)."""
    from bench.quality import references
    from tofu.negotiate import Negotiated
    from tofu.render import render
    from tofu.transform import Fit

    rows: list[dict[str, float | str]] = []
    for fmt in FORMATS:
        negotiated = Negotiated(fmt, ImageFormat.WEBP)
        encode_ms, sizes, scores = [], [], []
        for data in originals:
            for token in tokens:
                size = parse_size(token, 8192)
                renditions = [
                    render(data, size, RenderSettings(), negotiated) for _ in range(repeat)
                ]
                out = renditions[0]
                encode_ms.append(min(r.encode_seconds for r in renditions) * 1000)
                sizes.append(len(out.body))
                refs = references(data, out.width, out.height, crop=size.fit is Fit.COVER)
                pixels = decode(out.body)
                scores.append(max(ssim(ref, pixels) for ref in refs))
        rows.append(
            {
                "format": fmt.value,
                "encode_ms": statistics.fmean(encode_ms),
                "mean_bytes": statistics.fmean(sizes),
                "ssim_mean": statistics.fmean(scores),
                "ssim_worst": min(scores),
            }
        )
    return rows


def per_format_table(rows: Sequence[dict]) -> str:
    lines = [
        "| tofu, format | encode ms (mean) | mean bytes | SSIM worst / mean |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['encode_ms']:.1f} | {r['mean_bytes']:,.0f} | "
            f"{r['ssim_worst']:.3f} / {r['ssim_mean']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.formats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--photos", type=Path, default=ROOT / "samples", help="JPEG originals")
    parser.add_argument("--sizes", default="750x500c,280x194c", help="size tokens")
    parser.add_argument("--limit", type=int, help="at most this many photos")
    parser.add_argument("--repeat", type=int, default=3, help="encodes per timing (min taken)")
    parser.add_argument("--sweep", action="store_true", help="also sweep WebP/AVIF qualities")
    parser.add_argument("--avif-effort", type=int, default=RenderSettings().avif_effort)
    args = parser.parse_args(argv)

    pyvips.cache_set_max(0)
    tokens = [t.strip() for t in args.sizes.split(",") if t.strip()]
    photos = sorted(
        p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file()
    )[: args.limit]
    if not photos:
        print(f"no JPEG photos under {args.photos}", file=sys.stderr)
        return 2
    settings = RenderSettings(avif_effort=args.avif_effort)
    qualities: dict[ImageFormat, Sequence[int | None]] = {f: [None] for f in FORMATS}
    if args.sweep:
        for fmt, qs in SWEEP.items():
            qualities[fmt] = sorted({DEFAULT_QUALITY[fmt], *qs})
    samples: list[Sample] = []
    for photo in photos:
        data = photo.read_bytes()
        for token in tokens:
            print(f"  {photo.name} {token}", file=sys.stderr)
            samples += measure(data, photo.name, token, settings, qualities, args.repeat)
    summary = summarise(samples)
    print(
        f"{len(photos)} photos from {args.photos}; defaults "
        + ", ".join(f"{f.value} q{DEFAULT_QUALITY[f]}" for f in FORMATS)
        + f"; AVIF effort {settings.avif_effort}; SSIM vs a Lanczos3 reference\n"
    )
    print(markdown(summary, tokens))
    saved = savings(summary, tokens)
    print(
        f"\nMean byte savings vs JPEG q{DEFAULT_QUALITY[ImageFormat.JPEG]}: "
        + ", ".join(f"{fmt} {value:.0%}" for fmt, value in saved.items())
    )
    if args.sweep:
        print("\nQuality sweep (mean over photos):\n")
        print(markdown(summary, tokens, defaults_only=False))
        for fmt in SWEEP:
            q = matching_quality(summary, tokens, fmt)
            print(
                f"\n{fmt.value}: lowest quality with mean SSIM >= JPEG q"
                f"{DEFAULT_QUALITY[ImageFormat.JPEG]}: {q if q is not None else 'none swept'} "
                f"(default {DEFAULT_QUALITY[fmt]})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
