"""The miss path's own rules: JPEG shrink-on-load scales, the two shrink modes, the pixel budget
of a plan, cancelling a render at its deadline, and the node-wide render memory budget."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import pyvips

from tests.support.servers import SAMPLES
from tofu.config import Config
from tofu.errors import RenderTimeout, Unprocessable
from tofu.render import Cancellation, RenderSettings, prepare, render
from tofu.render.jpeg import decode_scale
from tofu.render_budget import RenderBudget, clear_worker, create_shared_file
from tofu.urls import parse_size

PHOTO = SAMPLES / "recipes" / "1203423" / "5366e857.jpg"


def strip_png(width: int = 1, height: int = 2000) -> bytes:
    """An extreme aspect ratio: covering a square box with it means a huge intermediate."""
    return (pyvips.Image.black(width, height) + 200).cast("uchar").pngsave_buffer()


@pytest.mark.parametrize(
    ("source", "output", "m"),
    [
        ((5640, 3172), (280, 157), 1),  # 1/8 = 705 wide: at least twice the output
        ((2560, 1600), (200, 125), 2),  # 1/8 = 320 is under twice 200; 2/8 = 640 is not
        ((2560, 1600), (512, 320), 3),  # 2/8 = 640 is under twice 512; 3/8 = 960 covers it
        ((1680, 1050), (280, 175), 3),  # 2/8 = 420 is under 560; 3/8 = 630 covers 280
        ((2560, 1600), (1200, 750), 4),  # 4/8 = 1280 x 800 covers 1200 x 750
        ((2560, 1600), (1300, 813), 8),  # 5/8-7/8 decode more slowly than the whole image
        ((100, 100), (200, 200), 8),  # upscaling decodes everything
    ],
)
def test_decode_scale_keeps_a_lanczos_margin_at_coarse_dct_scales(
    source: tuple[int, int], output: tuple[int, int], m: int
) -> None:
    assert decode_scale(*source, *output) == m


def test_default_mode_decodes_jpeg_at_a_smaller_scale_than_exact() -> None:
    data = PHOTO.read_bytes()
    size = parse_size("280", 4096)
    fast = prepare(data, size, RenderSettings())
    exact = prepare(data, size, RenderSettings(exact_shrink=True))
    assert fast.geometry.decode_scale < exact.geometry.decode_scale
    assert fast.memory_bytes < exact.memory_bytes
    a = render(data, size, RenderSettings())
    b = render(data, size, RenderSettings(exact_shrink=True))
    assert (a.width, a.height) == (b.width, b.height)
    assert a.body != b.body  # two different decoders really ran


@pytest.mark.parametrize("token", ["800x800cu", "1000x1000cu", "2000x40cu"])
def test_plan_refuses_an_intermediate_image_over_the_pixel_limit(token: str) -> None:
    with pytest.raises(Unprocessable, match="pixel limit"):
        prepare(strip_png(), parse_size(token, 4096), RenderSettings())


def test_plan_admits_the_same_crop_when_it_stays_under_the_limit() -> None:
    rendition = render(strip_png(), parse_size("800x800c", 4096), RenderSettings())
    assert (rendition.width, rendition.height) == (1, 1)  # no upscaling: the box shrinks


def test_cancelling_kills_the_render_inside_libvips() -> None:
    # A plan the pixel limit refuses, admitted here to have a render that takes seconds (a
    # smart crop of a 1000 x 300,000 upscale): cancelling must stop it, not wait for it.
    settings = RenderSettings(max_source_pixels=10**10)
    cancellation = Cancellation()
    outcome: list[object] = []

    def work() -> None:
        try:
            size = parse_size("1000x1000au", 4096)
            outcome.append(render(strip_png(1, 300), size, settings, None, cancellation))
        except RenderTimeout as exc:
            outcome.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # still rendering
    cancellation.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RenderTimeout)
    # Stopped inside libvips (the computation failed as killed), not merely refused after it.
    assert isinstance(outcome[0].__context__, pyvips.Error)
    assert "killed" in str(outcome[0].__context__)


async def test_a_render_past_its_deadline_gives_back_its_slot_only_when_stopped(
    make_client, tmp_path: Path
) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "strip.png").write_bytes(strip_png(1, 300))
    pyvips.Image.black(64, 64).pngsave(str(tmp_path / "b" / "small.png"))
    client = await make_client(
        origin=(str(tmp_path),),
        dev=True,
        max_renders=1,
        request_timeout=1.0,
        max_source_pixels=10**10,
    )
    runaway = await client.get("/b/1000x1000au/strip.png")
    assert runaway.status == 504
    # With the render still running in the only render thread, this would wait for it and time
    # out too; killed, the thread is free at once.
    response = await client.get("/b/32/small.png")
    assert response.status == 200


async def test_render_memory_budget_is_shared_by_the_workers_of_a_node(tmp_path: Path) -> None:
    path = str(tmp_path / "render-budget")
    create_shared_file(path, 2)
    one, two = RenderBudget(8, 100, path, 0), RenderBudget(8, 100, path, 1)
    try:
        async with one.hold(70):
            waiting = asyncio.create_task(_hold_briefly(two, 40))
            await asyncio.sleep(0.1)
            assert not waiting.done()  # 70 + 40 > 100: waits for the other worker
            assert two.node_totals == (1, 70)
        await asyncio.wait_for(waiting, 5)
        async with one.hold(500):  # larger than the budget: runs, alone
            assert one.node_totals == (1, 500)
            blocked = asyncio.create_task(_hold_briefly(two, 1))
            await asyncio.sleep(0.1)
            assert not blocked.done()
        await asyncio.wait_for(blocked, 5)
        assert one.node_totals == (0, 0)
    finally:
        one.close()
        two.close()


async def test_render_slots_are_shared_by_the_workers_of_a_node(tmp_path: Path) -> None:
    """--max-renders is per node: two workers do not run twice as many renders as cores."""
    path = str(tmp_path / "render-budget")
    create_shared_file(path, 2)
    one, two = RenderBudget(2, 1000, path, 0), RenderBudget(2, 1000, path, 1)
    try:
        async with one.hold(1), one.hold(1):
            waiting = asyncio.create_task(_hold_briefly(two, 1))
            await asyncio.sleep(0.1)
            assert not waiting.done()  # both slots of the node are taken by the other worker
        await asyncio.wait_for(waiting, 5)
    finally:
        one.close()
        two.close()


async def test_a_render_waiting_for_memory_holds_no_slot() -> None:
    budget = RenderBudget(2, 100)
    async with budget.hold(90):
        waiting = asyncio.create_task(_hold_briefly(budget, 50))  # no room: waits
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert budget.node_totals == (1, 90)  # the waiting render took no slot
    await asyncio.wait_for(waiting, 5)


async def test_a_dead_workers_budget_is_cleared_by_the_master(tmp_path: Path) -> None:
    path = str(tmp_path / "render-budget")
    create_shared_file(path, 2)
    dead, alive = RenderBudget(1, 100, path, 0), RenderBudget(1, 100, path, 1)
    try:
        await dead.acquire(90)  # held when its process died
        assert alive.node_totals == (1, 90)
        clear_worker(path, 0)
        async with alive.hold(90):
            assert alive.node_totals == (1, 90)
    finally:
        dead.close()
        alive.close()


async def _hold_briefly(budget: RenderBudget, cost: int) -> None:
    async with budget.hold(cost):
        await asyncio.sleep(0)


def test_config_defaults_are_the_shipped_defaults() -> None:
    """``Config()`` (what tests build) and ``Config.load`` (what ``tofu serve`` builds) agree on
    every setting nobody gave."""
    loaded = Config.load({"origin": str(SAMPLES), "dev": True}, environ={})
    built = Config(origin=(str(SAMPLES),), dev=True)
    assert loaded == built


_ALLOCATE_AND_FREE = """
import ctypes, resource, sys
from tofu.render import configure_malloc
if sys.argv[1] == "configured":
    configure_malloc()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def render_sized_buffer():
    block = libc.malloc(8 << 20)
    ctypes.memset(block, 1, 8 << 20)
    libc.free(block)
render_sized_buffer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    render_sized_buffer()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_render_processes_keep_freed_buffers_instead_of_faulting_them_in_again() -> None:
    def page_faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _ALLOCATE_AND_FREE, mode],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(run.stdout)

    # 5 x 8 MB is 10,240 pages: glibc's defaults fault most of them in again each time.
    assert page_faults("default") > 1000
    assert page_faults("configured") < 100
