"""Quality chosen per image: the lowest encoder quality whose output scores at least a target
against the image it encodes (``--auto-quality``, ``--quality-target``).

The score is SSIM over R, G and B (7x7 uniform window, data range 255: scikit-image's
``structural_similarity`` with ``channel_axis``, the score ``bench.quality`` reports) of the
decoded trial against the output-sized pixels before encoding, computed by ``fast-ssim`` (C,
~1.5 ms at 512x320 against ~50 ms for scikit-image, equal to 1e-6; bench/README.md, "Auto
quality", has the measurements and why not SSIMULACRA 2 at run time).

The search is bounded: at most ``ENCODE_BUDGET`` encodes, the chosen one among them (its bytes
are the answer, never encoded again). The first trial is a guess from the image's detail (the
mean absolute difference of neighbouring pixels of the first band): flat images need less
quality than textured ones. The second is a step by the format's typical slope of score per
quality; then the bracket between the best quality known to fail and the lowest known to pass
is narrowed halfway between linear interpolation and the bracket's middle. When nothing
passes, the format's upper bound is the answer ("capped"). Every choice depends only on the
pixels, so the same request gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import fast_ssim
import numpy as np
import pyvips

from tofu.formats import AUTO_QUALITY_TARGET
from tofu.transform import ImageFormat

# Trial encodes per rendition, the answer's included.
ENCODE_BUDGET = 4
# The qualities searched per format: below the lower bound artefacts are plain whatever the
# metric says; above the upper one bytes grow fast for nothing visible.
BOUNDS: dict[ImageFormat, tuple[int, int]] = {
    ImageFormat.JPEG: (40, 92),
    ImageFormat.WEBP: (40, 92),
    ImageFormat.AVIF: (25, 80),
}
# The bracket is narrow enough when it spans this many quality steps.
RESOLUTION = 2
DEFAULT_TARGET = AUTO_QUALITY_TARGET  # the format table's: the corpus median at fixed defaults
# Save-Data: the target's distance from a perfect score grows by this factor (the median score
# at the Save-Data defaults, JPEG q55, WebP q55, AVIF q45, measured the same way: 1.48).
SAVE_DATA_LOSS_FACTOR = 1.5

# The first guess: quality = a + b * ln(detail), per format, the least-squares fit of the
# lowest quality meeting the default target on the corpus (``python -m bench.autoquality
# --calibrate``; residual SD 13-18 quality steps: detail is a rough guide, the trials decide).
GUESS: dict[ImageFormat, tuple[float, float]] = {
    ImageFormat.JPEG: (35.3, 25.3),
    ImageFormat.WEBP: (43.9, 17.7),
    ImageFormat.AVIF: (26.6, 22.2),
}


# The score gained per quality step near the target (the corpus's median), for the second
# trial's step from the first.
SLOPE: dict[ImageFormat, float] = {
    ImageFormat.JPEG: 0.00175,
    ImageFormat.WEBP: 0.0029,
    ImageFormat.AVIF: 0.0019,
}


def bounds(output: ImageFormat, ceiling: int | None = None) -> tuple[int, int]:
    low, high = BOUNDS[output]
    if ceiling is not None:
        high = max(low, min(high, ceiling))
    return low, high


def applies(output: ImageFormat) -> bool:
    return output in BOUNDS


def save_data_target(target: float) -> float:
    return 1 - (1 - target) * SAVE_DATA_LOSS_FACTOR


def pixels(image: pyvips.Image) -> np.ndarray:
    """An 8-bit image as a C-contiguous H x W x bands array."""
    if image.format != "uchar":
        image = image.cast("uchar")
    data = image.write_to_memory()
    return np.ndarray(buffer=data, dtype=np.uint8, shape=(image.height, image.width, image.bands))


def detail(array: np.ndarray) -> float:
    """The mean absolute difference of horizontally and vertically neighbouring pixels of the
    first band (0-255): about 1 for a flat image, 10-20 for foliage or grated cheese."""
    grey = array[:, :, 0].astype(np.int16)
    dx = np.abs(np.diff(grey, axis=1)).mean() if grey.shape[1] > 1 else 0.0
    dy = np.abs(np.diff(grey, axis=0)).mean() if grey.shape[0] > 1 else 0.0
    return float(dx + dy) / 2


def first_guess(output: ImageFormat, detail_: float, ceiling: int | None = None) -> int:
    low, high = bounds(output, ceiling)
    a, b = GUESS[output]
    return min(high, max(low, round(a + b * math.log(max(detail_, 0.5)))))


def score(reference: np.ndarray, body: bytes) -> float:
    """SSIM of the decoded ``body`` against ``reference`` (the same size and bands)."""
    decoded = pixels(pyvips.Image.new_from_buffer(body, ""))
    if decoded.shape != reference.shape:
        bands = min(decoded.shape[2], reference.shape[2])
        decoded = np.ascontiguousarray(decoded[:, :, :bands])
        reference = np.ascontiguousarray(reference[:, :, :bands])
    return float(fast_ssim.ssim(reference, decoded, data_range=255))


@dataclass(frozen=True, slots=True)
class Choice:
    quality: int
    body: bytes
    score: float
    encodes: int
    capped: bool  # nothing within the bounds met the target: the upper bound


Encode = Callable[[int], bytes]


def search(
    image: pyvips.Image,
    output: ImageFormat,
    target: float,
    encode: Encode,
    *,
    budget: int = ENCODE_BUDGET,
    check: Callable[[], None] = lambda: None,
    ceiling: int | None = None,
) -> Choice:
    """The lowest quality of ``output`` within ``BOUNDS`` (and at most ``ceiling``) whose
    encoding by ``encode`` scores ``target`` or more against ``image`` (computed,
    output-sized), in at most ``budget`` encodes; ``check`` runs before each (the deadline)."""
    low, high = bounds(output, ceiling)
    reference = pixels(image)
    tried: dict[int, tuple[bytes, float]] = {}

    def trial(q: int) -> float:
        check()
        body = encode(q)
        tried[q] = (body, score(reference, body))
        return tried[q][1]

    failing: int | None = None  # the highest quality known to miss the target
    passing: int | None = None  # the lowest known to meet it
    q = first_guess(output, detail(reference), ceiling)
    while len(tried) < budget:
        if passing is None and len(tried) == budget - 1:
            q = high  # the last encode: the answer when nothing met the target
        if trial(q) >= target:
            passing = q
        else:
            failing = q
        if passing == low or failing == high:
            break
        nxt = _next(tried, failing, passing, output, target, (low, high))
        if nxt is None:
            break
        q = nxt
    if passing is None:
        if high not in tried:  # budget 1 and the guess missed: still the upper bound
            trial(high)
        body, value = tried[high]
        return Choice(high, body, value, len(tried), capped=value < target)
    body, value = tried[passing]
    return Choice(passing, body, value, len(tried), capped=False)


def _next(
    tried: dict[int, tuple[bytes, float]],
    failing: int | None,
    passing: int | None,
    output: ImageFormat,
    target: float,
    limits: tuple[int, int],
) -> int | None:
    """The next quality to try, or None when the bracket is narrow enough."""
    low, high = limits
    lo = failing if failing is not None else low - 1
    hi = passing if passing is not None else high + 1
    if hi - lo <= RESOLUTION:
        return None
    if failing is not None and passing is not None:
        s_lo, s_hi = tried[failing][1], tried[passing][1]
        middle = (lo + hi) / 2
        q = middle
        if s_hi > s_lo:
            # Halfway between the linear interpolation and the middle: the score is convex
            # in quality near the top (JPEG gains more per step above 85), where plain
            # interpolation keeps landing just short and never brackets the answer.
            q = (lo + (target - s_lo) / (s_hi - s_lo) * (hi - lo) + middle) / 2
        return min(hi - 1, max(lo + 1, round(q)))
    # One side only (the first trial): a Newton step with the format's typical slope, at
    # least RESOLUTION + 1 away so that the next bracket is narrower.
    (known,) = (q for q in (failing, passing) if q is not None)
    step = (target - tried[known][1]) / SLOPE[output]
    if passing is None:
        return min(high, known + max(RESOLUTION + 1, math.ceil(step)))
    return max(low, known - max(RESOLUTION + 1, math.floor(-step)))
