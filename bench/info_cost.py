"""CPU of an info document on a miss against a 280 px render of the same photo, in process.

    python -m bench.info_cost [PHOTO...]       (default: the samples/ photos)
    python -m bench.info_cost samples/recipes/*/*.jpg ../shared/corpus/photos/*.jpg

Each photo is rendered both ways ``--rounds`` times (alternating, after one warm-up each), one
thread, and the median ``time.process_time`` per call is printed. Process time, not wall time,
but still noisy on a shared machine: compare the two columns, not runs on different days.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyvips

from tofu.render import RenderSettings, configure_libvips, render
from tofu.urls import parse_size

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = sorted((ROOT / "samples" / "recipes").glob("*/*.jpg"))


def cpu_ms(data: bytes, token: str, settings: RenderSettings) -> float:
    size = parse_size(token, settings.max_output_side)
    started = time.process_time()
    render(data, size, settings)
    return (time.process_time() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    configure_libvips(threads=1)  # as a server renders: one thread, no operation cache
    settings = RenderSettings()
    print(f"{'photo':32} {'pixels':>10} {'info ms':>8} {'280 ms':>8} {'ratio':>6}")
    ratios = []
    for path in args.photos:
        data = path.read_bytes()
        header = pyvips.Image.new_from_buffer(data, "")
        timings: dict[str, list[float]] = {"info": [], "280": []}
        for token in timings:
            cpu_ms(data, token, settings)  # warm-up
        for _ in range(args.rounds):
            for token, samples in timings.items():
                samples.append(cpu_ms(data, token, settings))
        info, resize = (statistics.median(timings[t]) for t in ("info", "280"))
        ratios.append(info / resize)
        print(
            f"{path.name[:32]:32} {header.width * header.height:>10} "
            f"{info:>8.1f} {resize:>8.1f} {info / resize:>6.2f}"
        )
    print(f"median ratio info / 280 px: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
