"""A render is bounded by what it produces: an animation's output pixels x frames against the
animation budget (checked from the header, before decoding), its memory estimate from the
output, and the request deadline on every part of an animated render (decode, frames, encode).

The sizes are chosen so that today's failures stay affordable on a shared machine: an
unbounded 60-frame 1000x1000 render costs ~30 s of CPU and ~400 MB, not the 22 GB of the
500-frame 4096x4096 report (which only ``prepare``, header only, is asked about here)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pyvips

from tofu.errors import RenderTimeout, Unprocessable
from tofu.frontends.thumbor import parse_options
from tofu.render import Cancellation, RenderSettings, execute, pipeline, prepare, render
from tofu.urls import parse_size

from .support.images import animated_gif

MANY = animated_gif(40, 40, 500)  # 46 KB
SLACK = 6.0  # seconds past a deadline still counted as "at the deadline" on a busy machine


def pages(body: bytes) -> int:
    image = pyvips.Image.new_from_buffer(body, "")
    return int(image.get("n-pages")) if image.get_typeof("n-pages") else 1


def test_an_upscaled_animation_over_budget_is_not_planned_animated() -> None:
    """thumbor's upscale() of 500 frames of 40x40: 500 frames of 4096x4096 if animated."""
    size = parse_options("filters:upscale()/many.gif", max_side=4096).size
    plan = prepare(MANY, size, RenderSettings())
    assert not plan.animated
    assert plan.memory_bytes < 4096 * 4096 * 4 * 4  # one frame's worth, not 500


def test_a_cover_upscale_over_budget_is_not_planned_animated() -> None:
    """The tofu grammar: 1200x1200cu of 100 frames is 144 MP of output."""
    plan = prepare(animated_gif(40, 40, 100), parse_size("1200x1200cu", 4096), RenderSettings())
    assert not plan.animated


def test_an_animations_memory_estimate_follows_its_output() -> None:
    data = animated_gif(40, 40, 10)
    small = prepare(data, parse_size("20x20c", 4096), RenderSettings())
    large = prepare(data, parse_size("400x400cu", 4096), RenderSettings())
    assert small.animated and large.animated
    assert large.memory_bytes >= 400 * 400 * 10 * 4  # the output strip, at least
    assert small.memory_bytes < large.memory_bytes / 50


async def test_an_upscaled_animation_over_http_is_bounded(make_client, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "many.gif").write_bytes(animated_gif(40, 40, 60))
    pyvips.Image.black(64, 64).pngsave(str(tmp_path / "b" / "small.png"))
    client = await make_client(
        origin=(str(tmp_path),), dev=True, max_output_side=1000, request_timeout=20
    )
    for path in ("/unsafe/filters:upscale()/b/many.gif", "/b/1000x1000cu/many.gif"):
        response = await client.get(path)
        body = await response.read()
        assert response.status == 200 or 400 <= response.status < 500, path
        if response.status == 200:
            assert pages(body) == 1, path  # the first frame as a still
    assert (await client.get("/b/32/small.png")).status == 200


def _get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_deadline_stops_an_animated_render_and_frees_its_slot(
    tofu_process, tmp_path: Path
) -> None:
    """An animation admitted by a raised budget, slow to render: 504 at the deadline, and the
    only render slot free for the next request at once."""
    root = tmp_path / "origin" / "b"
    root.mkdir(parents=True)
    (root / "many.gif").write_bytes(animated_gif(40, 40, 60))
    (root / "huge.gif").write_bytes(MANY)
    pyvips.Image.black(64, 64).pngsave(str(root / "small.png"))
    timeout = 2.0
    tofu = tofu_process(
        ["--origin", str(tmp_path / "origin"), "--dev", "--drain-seconds", "0",
         "--max-renders", "1",
         "--request-timeout", str(timeout), "--max-animation-pixels", str(10**10),
         "--max-output-side", "1000"]
    )  # fmt: skip
    started = time.monotonic()
    status, _ = _get(f"{tofu.url}/b/1000x1000cu/many.gif")
    assert status == 504
    assert time.monotonic() - started < timeout + SLACK
    started = time.monotonic()
    status, _ = _get(f"{tofu.url}/b/32/small.png")
    assert status == 200
    assert time.monotonic() - started < timeout + SLACK
    assert _peak_rss(tofu.process.pid) < 1 << 30


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_an_upscale_of_many_frames_stays_within_memory(tofu_process, tmp_path: Path) -> None:
    """The reported request, on a real server with the default limits."""
    root = tmp_path / "origin" / "b"
    root.mkdir(parents=True)
    (root / "many.gif").write_bytes(MANY)
    pyvips.Image.black(64, 64).pngsave(str(root / "small.png"))
    tofu = tofu_process(
        [
            "--origin",
            str(tmp_path / "origin"),
            "--dev",
            "--drain-seconds",
            "0",
            "--request-timeout",
            "5",
        ]
    )
    status, body = _get(f"{tofu.url}/unsafe/filters:upscale()/b/many.gif")
    assert status == 504 or 400 <= status < 500 or (status == 200 and pages(body) == 1)
    assert _get(f"{tofu.url}/b/32/small.png")[0] == 200
    assert _peak_rss(tofu.process.pid) < 1 << 30


def _noise_jpeg(width: int, height: int) -> bytes:
    """A photo-sized picture no encoder can make small: every encoding is slow and large."""
    noise = pyvips.Image.gaussnoise(width, height, mean=128, sigma=60, seed=2).cast("uchar")
    image = noise.bandjoin([noise.rot("d180"), noise.flipver()]).copy(interpretation="srgb")
    return bytes(image.jpegsave_buffer(Q=90))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_deadline_stops_a_max_bytes_encoding_loop(tofu_process, tmp_path: Path) -> None:
    """max_bytes re-encodes at lower qualities until the result fits: on noise, never (eight
    WebP encodings of 6 MP, seconds each). The deadline stops the encoding under way."""
    root = tmp_path / "origin" / "b"
    root.mkdir(parents=True)
    (root / "noise.jpg").write_bytes(_noise_jpeg(3000, 2000))
    pyvips.Image.black(64, 64).pngsave(str(root / "small.png"))
    timeout = 2.0
    tofu = tofu_process(
        ["--origin", str(tmp_path / "origin"), "--dev", "--drain-seconds", "0",
         "--max-renders", "1",
         "--request-timeout", str(timeout)]
    )  # fmt: skip
    started = time.monotonic()
    status, _ = _get(f"{tofu.url}/unsafe/2990x0/filters:format(webp):max_bytes(1000)/b/noise.jpg")
    assert status == 504
    assert time.monotonic() - started < timeout + SLACK
    started = time.monotonic()
    assert _get(f"{tofu.url}/b/32/small.png")[0] == 200
    assert time.monotonic() - started < timeout + SLACK


def test_an_upscale_of_a_trimmed_animation_is_bounded_after_the_trim() -> None:
    """What a trim leaves is known only from the pixels: a 4x40 strip in a white 400x400
    frame, covering 1000x1000 upscaled, would be 1000x10,000 per frame."""
    pages = [
        (pyvips.Image.black(4, 40, bands=3) + 30 * shade)
        .embed(198, 180, 400, 400, extend="background", background=[255, 255, 255])
        .cast("uchar")
        for shade in range(6)
    ]
    frames = pyvips.Image.arrayjoin(pages, across=1)
    frames = frames.copy(interpretation="srgb")
    frames.set_type(pyvips.GValue.gint_type, "page-height", 400)
    data = bytes(frames.gifsave_buffer())
    size = parse_options("trim/1000x1000/filters:upscale()/x.gif", max_side=4096).size
    plan = prepare(data, size, RenderSettings())
    assert plan.animated
    assert plan.memory_bytes >= RenderSettings().max_animation_pixels * 4  # its upper bound
    with pytest.raises(Unprocessable, match=r"over the \d+ pixel budget for animations"):
        execute(data, plan, RenderSettings())


def test_a_step_added_later_is_under_the_deadline_without_doing_anything_for_it() -> None:
    """The runner watches each step's image: a statistic over a huge (lazy) image, in a step
    that knows nothing of deadlines, stops when the render is cancelled."""
    data = pyvips.Image.black(8, 8).pngsave_buffer()
    plan = prepare(data, parse_size("8", 4096), RenderSettings())
    cancellation = Cancellation()
    ctx = pipeline.Context(
        data, plan.source, plan.size, plan.size, plan.geometry, plan.output, False,
        RenderSettings(), cancellation,
    )  # fmt: skip
    noise = pipeline.Step(
        "make noise", lambda ctx, image: pyvips.Image.gaussnoise(20_000, 20_000), lambda ctx: True
    )
    average = pipeline.Step(
        "average", lambda ctx, image: image.copy(xres=image.avg()), lambda ctx: True
    )
    timer = threading.Timer(0.3, cancellation.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(RenderTimeout):
        pipeline.run_steps((noise, average), ctx, pyvips.Image.black(1, 1))
    assert time.monotonic() - started < SLACK  # the average alone takes tens of seconds
    timer.cancel()


def test_a_cancelled_render_does_not_start() -> None:
    cancellation = Cancellation()
    cancellation.cancel()
    with pytest.raises(RenderTimeout):
        render(MANY, parse_size("40", 4096), RenderSettings(), None, cancellation)


@pytest.mark.parametrize(
    "filters",
    [
        "sharpen(5,1,false)",
        "convolution(" + ";".join(["1"] * 225) + ",15,true)",
        "equalize():noise(50):saturation(2)",
    ],
)
def test_the_deadline_stops_thumbors_filters(filters: str) -> None:
    """The new filter steps are watched like the others: cancelled 0.3 s in, a 4096x4096
    render with them (seconds of work each) stops at once."""
    data = pyvips.Image.black(64, 64).new_from_image([90, 120, 200]).cast("uchar").pngsave_buffer()
    size = parse_options(f"4096x4096/filters:upscale():{filters}/x.png", max_side=4096).size
    cancellation = Cancellation()
    timer = threading.Timer(0.3, cancellation.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(RenderTimeout):
        render(data, size, RenderSettings(), None, cancellation)
    assert time.monotonic() - started < SLACK
    timer.cancel()
