"""Proof in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright)
loads a page served by this test with ``<img>``, ``<img srcset sizes>`` and ``<picture>``
elements pointing at a real tofu process, at deviceScaleFactor 1, 2 and 3.

Asserted from what the browser received (network events, the bodies decoded here) and rendered
(``img.decode()``, natural sizes, screenshots): AVIF or WebP per Chromium's own Accept header,
the DPR-correct rendition through srcset and through Client Hints (Sec-CH-DPR, Sec-CH-Width),
an animation that animates, and every image decoded. When Chromium cannot start on a machine
the test is skipped with the reason (``-rs`` prints it), never passed.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pyvips
from aiohttp import web

from .support.servers import SAMPLES, free_port
from .test_animated import animation

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1000, "height": 800}
PREFERENCE = ("image/avif", "image/webp")  # tofu's default --negotiate order


@dataclass
class Received:
    """One image response as the browser got it."""

    url: str
    request_headers: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers["content-type"]

    def image(self) -> pyvips.Image:
        return pyvips.Image.new_from_buffer(self.body, "", **self.all_frames())

    def all_frames(self) -> dict[str, int]:
        return {"n": -1} if self.media_type in ("image/webp", "image/gif") else {}

    def size(self) -> tuple[int, int]:
        image = self.image()
        page = image.get("page-height") if image.get_typeof("page-height") else image.height
        return image.width, page


def page_html(tofu: str) -> str:
    photo = tofu + "/photos/{}/photo.jpg"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tofu in a browser</title>
<style>body {{ margin: 0 }} img {{ display: block; margin: 4px }}</style></head>
<body>
<img id="hinted" src="{photo.format("320x200c")}" width="320" height="200" alt="">
<img id="srcset" src="{photo.format("200x125c")}" width="200" height="125" alt=""
     srcset="{photo.format("200x125c@1x")} 1x, {photo.format("200x125c@2x")} 2x,
             {photo.format("200x125c@3x")} 3x">
<img id="sized" src="{photo.format("300w")}" sizes="300px" style="width: 300px" alt="">
<picture id="picture">
  <source type="image/webp" srcset="{photo.format("240x150c.webp")}">
  <img id="fallback" src="{photo.format("240x150c.jpg")}" width="240" height="150" alt="">
</picture>
<img id="animated" src="{tofu}/stickers/40x20c/wave.gif" width="40" height="20" alt="">
</body></html>"""


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / "photos").mkdir(parents=True)
    (root / "stickers").mkdir()
    shutil.copy(SAMPLES / "recipes" / "1203423" / "5366e857.jpg", root / "photos" / "photo.jpg")
    (root / "stickers" / "wave.gif").write_bytes(animation("gif"))  # 4 frames of 100+ ms
    return root


async def serve_page(tofu: str) -> web.AppRunner:
    """The app's page: it opts in to Client Hints and delegates them to tofu's origin."""
    hints = ("ch-dpr", "ch-width", "ch-viewport-width")

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=page_html(tofu),
            content_type="text/html",
            headers={
                "Accept-CH": "Sec-CH-DPR, Sec-CH-Width, Sec-CH-Viewport-Width",
                "Permissions-Policy": ", ".join(f'{h}=(self "{tofu}")' for h in hints),
            },
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


async def launch(playwright: Playwright, profile: Path, scale: int) -> BrowserContext:
    """A fresh browser (empty profile) at ``scale``."""
    try:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            device_scale_factor=scale,
            viewport=VIEWPORT,
        )
    except Exception as exc:  # any launch failure: skip with the reason, not pass
        pytest.skip(f"Chromium cannot start: {' '.join(str(exc).split())[:400]}")
    return context


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium cannot start: {CHROMIUM} is missing (make system-deps installs it)")
    return CHROMIUM


@pytest.mark.parametrize("scale", [1, 2, 3])
async def test_chromium_gets_the_right_format_and_size(
    tofu_process, chromium: Path, origin: Path, tmp_path: Path, scale: int
) -> None:
    async_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    tofu = tofu_process(
        [
            "--origin",
            str(origin),
            "--dev",
            "--workers",
            "1",
            "--client-hints",
            "--drain-seconds",
            "0",
        ]
    )
    runner = await serve_page(tofu.url)
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()
    page_url = site.name + "/"
    try:
        async with async_api.async_playwright() as playwright:
            context = await launch(playwright, tmp_path / "profile", scale)
            try:
                await check_page(context, page_url, tofu.url, scale)
            finally:
                await context.close()
    finally:
        await runner.cleanup()


async def check_page(context: BrowserContext, page_url: str, tofu: str, scale: int) -> None:
    page = context.pages[0] if context.pages else await context.new_page()
    responses = []
    page.on("response", lambda r: responses.append(r) if r.url.startswith(tofu) else None)
    await page.goto(page_url, wait_until="load")
    # Every image decodes (img.decode() rejects otherwise) and has a natural size.
    await page.evaluate("Promise.all(Array.from(document.images).map(i => i.decode()))")
    images = await page.evaluate(
        "Array.from(document.images).map(i => ({id: i.id, complete: i.complete,"
        " width: i.naturalWidth, src: i.currentSrc}))"
    )
    assert len(images) == 5
    for image in images:
        assert image["complete"] and image["width"] > 0, image

    received = {}
    for response in responses:
        assert response.status == 200, (response.url, response.status)
        request_headers = await response.request.all_headers()
        received[response.url] = Received(
            response.url, request_headers, await response.all_headers(), await response.body()
        )
    by_id = {image["id"]: received[image["src"]] for image in images}

    # Formats: negotiated ones follow the Accept header Chromium itself sent.
    for name in ("hinted", "srcset", "sized"):
        got = by_id[name]
        accept = got.request_headers["accept"]
        expected = next(t for t in PREFERENCE if t in accept)
        assert got.media_type == expected, (name, accept)
        assert "Accept" in got.headers["vary"]
        assert got.headers["accept-ch"].startswith("Sec-CH-DPR")
    assert by_id["fallback"].media_type == "image/webp"  # <picture> chose its WebP source
    assert by_id["fallback"].url.endswith("/240x150c.webp/photo.jpg")

    # DPR through srcset: the browser picked the candidate for its density.
    assert by_id["srcset"].url.endswith(f"/200x125c@{scale}x/photo.jpg")
    assert by_id["srcset"].size() == (200 * scale, 125 * scale)
    # DPR through Client Hints: one URL, the rendition for the screen.
    hinted = by_id["hinted"]
    assert hinted.request_headers["sec-ch-dpr"] == str(scale)
    assert hinted.size() == (320 * scale, 200 * scale)
    assert "Sec-CH-DPR" in hinted.headers["vary"]
    assert by_id["fallback"].size() == (240 * scale, 150 * scale)
    # Width hint: drawn 300 CSS px wide, so 300 x DPR device pixels.
    sized = by_id["sized"]
    assert sized.request_headers["sec-ch-width"] == str(300 * scale)
    width, height = sized.size()
    assert width == 300 * scale
    assert abs(height - 300 * scale * 1000 / 1600) <= 1  # the photo's aspect (1600x1000)
    assert "Sec-CH-Width" in sized.headers["vary"]

    # The animation arrives animated (WebP: Chromium accepts it) and animates on screen.
    animated = by_id["animated"]
    assert animated.media_type == "image/webp"
    assert animated.image().get("n-pages") == 4
    assert animated.size() == (40 * scale, 20 * scale)  # the source is 120x60
    element = page.locator("#animated")
    first = await element.screenshot()
    for _ in range(50):  # frames change every 40-160 ms; look for up to 5 s
        await asyncio.sleep(0.1)
        if await element.screenshot() != first:
            break
    else:
        pytest.fail("the animated image did not change on screen")
    # And the still photo rendered as a picture, not as a blank box.
    shot = pyvips.Image.new_from_buffer(await page.locator("#hinted").screenshot(), "")
    assert shot.deviate() > 20
