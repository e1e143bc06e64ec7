"""What each server's output looks like: SSIM against a reference that saw no shortcut.

After a server's load run, ``bench.compare`` fetches its output for every photo of the workload
once. Each output is decoded and compared with the original decoded in full by libvips (no
shrink-on-load), autorotated, in sRGB, and resized with Lanczos-3 to the output's exact
dimensions (for a crop: to cover them, then centre-cropped). SSIM is scikit-image's over the R, G
and B channels (``channel_axis``), data range 255, as in ``bench.formats``: chroma subsampling
and colour shifts count, not only luminance.

A centre crop whose margin is odd has two centres: libvips (tofu) rounds the offset down, sharp
up. One pixel of misalignment costs fine texture up to 0.25 of SSIM, which would measure the
convention rather than the pixels, so a crop scores against each rounding and keeps the better.
"""

from __future__ import annotations

import functools
import statistics
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips

from bench.formats import cover, full_decode, ssim, to_array
from bench.targets import size_of
from tofu.transform import Fit


def references(data: bytes, width: int, height: int, *, crop: bool) -> list[np.ndarray]:
    """The original at ``width`` x ``height``: Lanczos-3 from the full decode, both axes scaled
    to the exact dimensions; ``crop``: covered, then cropped at each centre (one to four)."""
    if not crop:
        image = full_decode(data)
        scale = width / image.width
        return [to_array(image.resize(scale, vscale=height / image.height, kernel="lanczos3"))]
    resized = cover(data, width, height)
    dx, dy = resized.width - width, resized.height - height
    return [
        to_array(resized.crop(left, top, width, height))
        for left in sorted({dx // 2, (dx + 1) // 2})
        for top in sorted({dy // 2, (dy + 1) // 2})
    ]


def ssimulacra2(reference: np.ndarray, image: np.ndarray) -> float:
    """SSIMULACRA 2 (the ``ssimulacra2`` package, numpy and scipy: ~0.3 s at 650x430) of two
    H x W x 3 uint8 arrays: the package's ``compute_ssimulacra2`` steps, which read files."""
    from ssimulacra2 import ssimulacra2 as m

    orig_linear = m.srgb_to_linear(reference.astype(np.float64))
    dist_linear = m.srgb_to_linear(image.astype(np.float64))
    img1 = m.make_positive_xyb(m.linear_rgb_to_xyb(orig_linear))
    img2 = m.make_positive_xyb(m.linear_rgb_to_xyb(dist_linear))
    msssim = m.Msssim()
    for scale in range(m.kNumScales):
        if img1.shape[0] < 8 or img1.shape[1] < 8:
            break
        blur = m.blur_image
        s11, s22, s12 = blur(img1 * img1), blur(img2 * img2), blur(img1 * img2)
        mu1, mu2 = blur(img1), blur(img2)
        data = m.MsssimScale()
        data.avg_ssim = m.ssim_map(mu1, mu2, s11, s22, s12)
        data.avg_edgediff = m.edge_diff_map(img1, mu1, img2, mu2)
        msssim.scales.append(data)
        if scale < m.kNumScales - 1:
            orig_linear = m.downsample(orig_linear, 2, 2)
            dist_linear = m.downsample(dist_linear, 2, 2)
            img1 = m.make_positive_xyb(m.linear_rgb_to_xyb(orig_linear))
            img2 = m.make_positive_xyb(m.linear_rgb_to_xyb(dist_linear))
    return float(msssim.score())


@dataclass(frozen=True)
class Scored:
    width: int
    height: int
    ssim: float
    chroma: str  # the JPEG's chroma subsampling ("4:2:0"), "" for other formats
    ssimulacra2: float | None = None  # when asked for, against the best-SSIM reference


def score(
    body: bytes,
    references_for: Callable[[int, int], list[np.ndarray]],
    with_ssimulacra2: bool = False,
) -> Scored:
    """Decode ``body`` and compare it with ``references_for(width, height)``: the best SSIM,
    and SSIMULACRA 2 against that reference when asked."""
    image = pyvips.Image.new_from_buffer(body, "")
    chroma = ""
    if image.get_typeof("jpeg-chroma-subsample"):
        chroma = str(image.get("jpeg-chroma-subsample")).split()[0]
    pixels = to_array(image.colourspace("srgb"))
    best, reference = max(
        ((ssim(ref, pixels), i) for i, ref in enumerate(references_for(image.width, image.height)))
    )
    s2 = None
    if with_ssimulacra2:
        s2 = ssimulacra2(references_for(image.width, image.height)[reference], pixels)
    return Scored(image.width, image.height, best, chroma, s2)


@dataclass
class Quality:
    """One server's outputs over a workload's photos."""

    worst: float | None = None
    mean: float | None = None
    dims: dict[str, str] = field(default_factory=dict)  # "KEY TOKEN" -> "WxH"
    chroma: list[str] = field(default_factory=list)  # the distinct subsamplings seen
    failures: list[str] = field(default_factory=list)  # "KEY TOKEN: why"
    formats: dict[str, int] = field(default_factory=dict)  # Content-Type -> outputs
    ssimulacra2_worst: float | None = None  # when asked for (W5)
    ssimulacra2_mean: float | None = None


class Scorer:
    """Fetches and scores outputs, keeping each reference (per photo, size and output
    dimensions) for the next server, so every original is decoded in full once per size."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._originals: dict[str, bytes] = {}
        self._references: dict[tuple[str, bool, int, int], list[np.ndarray]] = {}

    def _references_for(self, key: str, crop: bool, width: int, height: int) -> list[np.ndarray]:
        cached = self._references.get((key, crop, width, height))
        if cached is None:
            data = self._originals.get(key)
            if data is None:
                data = self._originals[key] = (self.root / key).read_bytes()
            cached = references(data, width, height, crop=crop)
            self._references[(key, crop, width, height)] = cached
        return cached

    def run(
        self,
        base_url: str,
        pairs: Sequence[tuple[str, str]],
        path_for: Callable[[str, str], str],
        headers: dict[str, str] | None = None,
        with_ssimulacra2: bool = False,
    ) -> Quality:
        """Fetch ``path_for(key, token)`` from ``base_url`` for every pair (with ``headers``,
        e.g. a browser's Accept) and score it."""
        quality = Quality()
        scores, perceptual = [], []
        for key, token in pairs:
            label = f"{key} {token}"
            request = urllib.request.Request(base_url + path_for(key, token), headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    body = r.read()
                    media_type = r.headers.get("Content-Type", "?")
            except urllib.error.HTTPError as exc:
                quality.failures.append(f"{label}: HTTP {exc.code}")
                continue
            except OSError as exc:
                quality.failures.append(f"{label}: {type(exc).__name__}")
                continue
            crop = size_of(token).fit is Fit.COVER
            try:
                references_for = functools.partial(self._references_for, key, crop)
                scored = score(body, references_for, with_ssimulacra2)
            except pyvips.Error:
                quality.failures.append(f"{label}: not an image")
                continue
            scores.append(scored.ssim)
            if scored.ssimulacra2 is not None:
                perceptual.append(scored.ssimulacra2)
            quality.formats[media_type] = quality.formats.get(media_type, 0) + 1
            quality.dims[label] = f"{scored.width}x{scored.height}"
            if scored.chroma and scored.chroma not in quality.chroma:
                quality.chroma.append(scored.chroma)
        if scores:
            quality.worst = min(scores)
            quality.mean = statistics.fmean(scores)
        if perceptual:
            quality.ssimulacra2_worst = min(perceptual)
            quality.ssimulacra2_mean = statistics.fmean(perceptual)
        return quality


def differing_dims(dims: dict[str, str], tofu: dict[str, str], tolerance: int = 1) -> list[str]:
    """The labels whose output differs from tofu's by more than ``tolerance`` pixels on a
    side, as "LABEL: WxH vs tofu WxH"."""
    out = []
    for label, wh in dims.items():
        theirs = tofu.get(label)
        if theirs is None:
            continue
        (w, h), (tw, th) = (map(int, wh.split("x")), map(int, theirs.split("x")))
        if abs(w - tw) > tolerance or abs(h - th) > tolerance:
            out.append(f"{label}: {wh} vs tofu {theirs}")
    return out
