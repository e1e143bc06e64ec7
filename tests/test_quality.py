"""Resize quality: both shrink modes must look like a careful Lanczos downscale of the fully
decoded original. The default decodes JPEGs at the smallest DCT scale quality allows (then
Lanczos-3 in libvips) and is held to SSIM 0.97; ``exact_shrink`` (libvips ``thumbnail``, which
keeps a factor of two for the Lanczos step) to 0.98.

The photos are the repository's samples and, when it sits beside the project (every developer
machine and CI), the shared corpus; without it those cases are skipped, saying so. The
comparison is on lossless (PNG) output so that it measures the resampling, not the JPEG
encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from skimage.metrics import structural_similarity

from tofu.render import RenderSettings, render
from tofu.transform import Fit
from tofu.urls import parse_size

from .support.servers import SAMPLES, SHARED_CORPUS

CORPUS_PHOTOS = SHARED_CORPUS / "photos"
PHOTOS = [
    *sorted(SAMPLES.rglob("*.jpg"), key=lambda p: p.name),
    *(
        sorted(CORPUS_PHOTOS.glob("*.jpg"), key=lambda p: p.name)
        if CORPUS_PHOTOS.is_dir()
        else [
            pytest.param(
                CORPUS_PHOTOS,
                marks=pytest.mark.skip(reason=f"{SHARED_CORPUS} is absent: corpus photos"),
                id="corpus-absent",
            )
        ]
    ),
]
# Output widths from 200 to 1200 meet every DCT scale tofu decodes at (1/8 to 1/2 and full).
SIZES = ["200", "280", "512", "650s", "1200", "280x194c", "750x500c"]
MODES = {"default": (RenderSettings(), 0.97), "exact": (RenderSettings(exact_shrink=True), 0.98)}


def as_array(image: pyvips.Image) -> np.ndarray:
    return np.asarray(image.numpy(), dtype=np.float64).reshape(image.height, image.width, -1)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


def reference(full: pyvips.Image, token: str, width: int, height: int) -> pyvips.Image:
    """Pure Lanczos-3 (``gap=0``: no box pre-shrink) from the full decode, then the same centre
    crop as a COVER rendition."""
    size = parse_size(token, 4096)
    if size.fit is Fit.INSIDE:
        return full.resize(
            width / full.width, vscale=height / full.height, kernel="lanczos3", gap=0
        )
    assert size.width is not None and size.height is not None
    scale = max(size.width / full.width, size.height / full.height)
    covered = full.resize(scale, kernel="lanczos3", gap=0)
    left, top = (covered.width - width) // 2, (covered.height - height) // 2
    return covered.crop(left, top, width, height)


def test_there_are_photos_to_compare() -> None:
    assert len(PHOTOS) >= 4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_render_matches_a_careful_lanczos_downscale(path: Path, mode: str) -> None:
    settings, min_ssim = MODES[mode]
    data = path.read_bytes()
    full = pyvips.Image.new_from_buffer(data, "").autorot().colourspace("srgb").copy_memory()
    scores = {}
    for token in SIZES:
        result = render(data, parse_size(token + ".png", 4096), settings)
        output = pyvips.Image.new_from_buffer(result.body, "")
        expected = reference(full, token, output.width, output.height)
        out, ref = as_array(output), as_array(expected)
        assert out.shape == ref.shape
        scores[token] = (
            structural_similarity(luminance(out), luminance(ref), data_range=255),
            structural_similarity(out, ref, data_range=255, channel_axis=2),
        )
    low = {token: s for token, s in scores.items() if min(s) < min_ssim}
    assert not low, f"SSIM (luminance, per channel) below {min_ssim}: {low}"
