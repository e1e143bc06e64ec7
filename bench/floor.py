"""The physical floor of a miss: decoding the JPEG and nothing else, measured in-process.

For each photo, tofu's own planning (``tofu.render.steps.probe`` and ``plan``, which choose the
DCT scale with ``tofu.render.jpeg.decode_scale``) gives the scale its fast path decodes at for
the workload's size; ``tofu.render.jpeg.decode`` (libjpeg-turbo through simplejpeg) then decodes
the bytes, already in memory, ``repeat`` times on one thread. The floor is the mean over photos
of each photo's median CPU time (``time.thread_time``): what a render costs before resizing,
encoding, HTTP and everything else. tofu's CPU ms per request over it says how close the miss
path is to the limit.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tofu.render import RenderSettings
from tofu.render import jpeg as tofu_jpeg
from tofu.render.steps import plan, probe
from tofu.urls import parse_size


@dataclass(frozen=True)
class Floor:
    mean_ms: float
    photos: int
    scales: dict[str, int] = field(default_factory=dict)  # "M/8" -> photos decoded at it

    def describe(self) -> str:
        scales = ", ".join(f"{m} x{n}" for m, n in sorted(self.scales.items()))
        return f"{self.mean_ms:.2f} ms per photo over {self.photos} photos (DCT scale {scales})"


def decode_ms(data: bytes, token: str, repeat: int = 5) -> tuple[float, int]:
    """(median CPU ms of decoding ``data`` at the scale tofu's fast path uses for ``token``,
    that scale M of M/8)."""
    settings = RenderSettings()
    source = probe(data, settings)
    if not source.turbo_decodable:
        raise ValueError("not a JPEG that tofu decodes with libjpeg-turbo")
    geometry = plan(source, parse_size(token, settings.max_output_side), settings)
    width, height = source.stored_size
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        tofu_jpeg.decode(data, geometry.decode_scale, width, height, grey=source.bands == 1)
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times), geometry.decode_scale


def decode_floor(originals: Sequence[bytes], token: str, repeat: int = 5) -> Floor | None:
    """The floor over ``originals`` (photos tofu's fast path does not decode are left out);
    None when none is left."""
    times = []
    scales: Counter[str] = Counter()
    for data in originals:
        try:
            ms, m = decode_ms(data, token, repeat)
        except ValueError:
            continue
        times.append(ms)
        scales[f"{m}/8"] += 1
    if not times:
        return None
    return Floor(statistics.fmean(times), len(times), dict(scales))
