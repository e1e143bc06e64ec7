"""The HTTP surface, in process: status codes, one-line reasons, signing, traversal, HEAD.

Paths that an HTTP client would normalise (``..``, ``%2e``) are sent byte for byte over a raw
connection, as an attacker would send them.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import pyvips
from aiohttp.test_utils import TestClient

from tests.support.images import PDF, SVG, png_claiming
from tests.support.metrics import metric
from tests.support.origins import CountingOrigin
from tests.support.servers import FIXTURES, SAMPLES
from tofu.signing import sign, url_for

SECRET = "http-test-secret"
PHOTO_KEY = "recipes/1203423/5366e857.jpg"  # 1600x1000 in samples/
PHOTO_PATH = "/recipes/1203423/280x194c/5366e857.jpg"
GOOD_PATH = "/photos/280/photo.jpg"  # in the torture origin below
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def torture_root(tmp_path: Path) -> Path:
    """An origin with one good photo and every kind of bad original."""
    root = tmp_path / "origin"
    (root / "photos").mkdir(parents=True)
    shutil.copy(SAMPLES / PHOTO_KEY, root / "photos" / "photo.jpg")
    (root / "photos" / "notes.txt").write_bytes(b"not an image\n")
    (root / "photos" / "drawing.svg").write_bytes(SVG)
    (root / "photos" / "paper.pdf").write_bytes(PDF)
    (root / "photos" / "fake.jpg").write_bytes(b"<html>surprise</html>")
    shutil.copy(FIXTURES / "broken" / "truncated.jpg", root / "photos" / "truncated.jpg")
    shutil.copy(FIXTURES / "broken" / "truncated.gif", root / "photos" / "truncated.gif")
    shutil.copy(FIXTURES / "pngsuite" / "xcsn0g01.png", root / "photos" / "bad-crc.png")
    (root / "photos" / "bomb.png").write_bytes(png_claiming(30_000, 30_000))
    (root / "photos" / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * (2 << 20))
    (tmp_path / "outside.jpg").write_bytes((SAMPLES / PHOTO_KEY).read_bytes())
    (root / "photos" / "leak.jpg").symlink_to(tmp_path / "outside.jpg")
    return root


@pytest.fixture
async def dev_client(make_client: MakeClient, torture_root: Path) -> TestClient:
    return await make_client(
        origin=(str(torture_root),), dev=True, max_source_bytes=1 << 20, not_found_ttl=0
    )


async def raw_request(
    client: TestClient, target: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Send ``target`` exactly as given (no client-side normalisation) and read the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        request = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def image_size(body: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(body, "")
    return image.width, image.height


def assert_one_line_reason(content_type: str, body: bytes, max_length: int = 10_000) -> str:
    """A plain-text body of one non-empty line; returns it."""
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    assert 1 < len(text) <= max_length, text
    return text


async def origin_fetches(client: TestClient) -> float:
    response = await client.get("/metrics")
    return metric(await response.text(), "tofu_origin_fetches_total")


# --- success ----------------------------------------------------------------------------------


async def test_signed_url_renders_the_sample(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), secret=(SECRET,))
    url = url_for(PHOTO_KEY, "280x194c", SECRET)
    assert url == f"/{sign(PHOTO_PATH, SECRET)}{PHOTO_PATH}"
    response = await client.get(url)
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    body = await response.read()
    assert image_size(body) == (280, 194)
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["ETag"]


@pytest.mark.parametrize("query", ["?u=123&p=1428328336", "?v=2", "?", "?280x194c"])
async def test_query_string_does_not_matter(make_client: MakeClient, query: str) -> None:
    client = await make_client(origin=(str(SAMPLES),), secret=(SECRET,))
    url = url_for(PHOTO_KEY, "280x194c", SECRET)
    plain = await client.get(url)
    busted = await client.get(url + query)
    assert busted.status == plain.status == 200
    assert await busted.read() == await plain.read()
    assert busted.headers["ETag"] == plain.headers["ETag"]


async def test_head_returns_headers_without_a_body(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True)
    get = await client.get(PHOTO_PATH)
    body = await get.read()
    head = await client.head(PHOTO_PATH)
    assert head.status == 200
    assert head.headers["Content-Type"] == "image/jpeg"
    assert head.headers["ETag"] == get.headers["ETag"]
    assert int(head.headers["Content-Length"]) == len(body)
    assert await head.read() == b""
    # Also on the wire: nothing after the headers.
    status, headers, raw_body = await raw_request(client, PHOTO_PATH, method="HEAD")
    assert (status, raw_body) == (200, b"")
    assert headers["content-type"] == "image/jpeg"


async def test_head_of_an_error_has_its_status(dev_client: TestClient) -> None:
    response = await dev_client.head("/photos/280/missing.jpg")
    assert response.status == 404
    assert await response.read() == b""


@pytest.mark.parametrize(
    ("path", "size", "content_type"),
    [
        ("/recipes/1/650s/cups.jpg", (650, 406), "image/jpeg"),
        ("/recipes/2/280@2x.webp/autumn.jpg", (560, 350), "image/webp"),
        ("/logos/64x64c/rgba.png", (64, 64), "image/png"),
        ("/recipes/1203423/x100.png/5366e857.jpg", (160, 100), "image/png"),
    ],
)
async def test_sample_urls(
    make_client: MakeClient, path: str, size: tuple[int, int], content_type: str
) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True)
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == content_type
    assert image_size(await response.read()) == size


async def test_allowlist_mode_over_http(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), sizes=("280x194c", "650s"))
    assert (await client.get(PHOTO_PATH)).status == 200
    assert (await client.get("/recipes/1/650s/cups.jpg")).status == 200
    assert (await client.get("/recipes/1/650x650/cups.jpg")).status == 403  # not canonical
    refused = await client.get("/recipes/1/651s/cups.jpg")
    assert refused.status == 403
    assert "allowlist" in assert_one_line_reason(refused.content_type, await refused.read())


# --- errors -----------------------------------------------------------------------------------

DEV_ERRORS = [
    ("/photos/0/photo.jpg", 400, "at least 1"),
    ("/photos/100000/photo.jpg", 400, "px limit"),
    ("/photos/5000x5000c/photo.jpg", 400, "px limit"),
    ("/photos/280q101/photo.jpg", 400, "quality must be 1-100"),
    ("/photos/280q0/photo.jpg", 400, "quality must be 1-100"),
    ("/photos/280@5x/photo.jpg", 400, "DPR"),
    ("/photos/280.bmp/photo.jpg", 400, "unknown format"),
    ("/photos/banana/photo.jpg", 400, "no size before the file name"),
    ("/photos/280zz/photo.jpg", 400, "cannot parse"),
    ("/photo.jpg", 400, "expected /{prefix...}/{size}/{name}"),
    ("/", 400, "expected"),
    ("/favicon.ico", 400, "expected"),
    ("/photos/280/", 400, "empty"),
    ("/photos/280/missing.jpg", 404, "no original at 'photos/missing.jpg'"),
    ("/nowhere/280/photo.jpg", 404, "no original"),
    ("/photos/280/photo.jpg/deeper", 400, "no size before the file name"),
    ("/photos/photo.jpg/280/x", 404, "no original"),
    ("/photos/280/leak.jpg", 404, "no original"),
    ("/photos/280/notes.txt", 415, "not a JPEG, PNG, WebP, GIF or AVIF"),
    ("/photos/280/drawing.svg", 415, "not a JPEG"),
    ("/photos/280/paper.pdf", 415, "not a JPEG"),
    ("/photos/280/fake.jpg", 415, "not a JPEG"),
    ("/photos/280/truncated.jpg", 422, "cannot decode"),
    ("/photos/280/truncated.gif", 422, "cannot decode"),
    ("/photos/280/bad-crc.png", 422, ""),
    ("/photos/280/bomb.png", 422, "30000x30000, over the 50000000 pixel limit"),
    ("/photos/280/huge.jpg", 422, "over the 1048576 limit"),
]


@pytest.mark.parametrize(("path", "status", "reason"), DEV_ERRORS)
async def test_each_bad_request_gets_its_status_and_the_next_one_works(
    dev_client: TestClient, path: str, status: int, reason: str
) -> None:
    response = await dev_client.get(path)
    assert response.status == status
    text = assert_one_line_reason(response.content_type, await response.read(), max_length=200)
    assert reason in text
    assert "no-store" not in response.headers["Cache-Control"]  # client errors may be cached
    following = await dev_client.get(GOOD_PATH)
    assert following.status == 200
    assert image_size(await following.read()) == (280, 175)


async def test_errors_in_a_row_do_not_wear_the_server_down(dev_client: TestClient) -> None:
    for path, status, _ in DEV_ERRORS * 2:
        assert (await dev_client.get(path)).status == status
    assert (await dev_client.get(GOOD_PATH)).status == 200
    metrics = await (await dev_client.get("/metrics")).text()
    assert 'tofu_requests_total{cache="-",status="500"}' not in metrics


@pytest.mark.parametrize(
    "target",
    [
        "/..%2F..%2Fetc/280/passwd",
        "/%2e%2e/280/x.jpg",
        "/%2E%2E/%2e%2e/etc/280/passwd",
        "/photos/../../280/outside.jpg",
        "/../280/outside.jpg",
        "/photos/%2e%2e/280/outside.jpg",
        "/photos/280/..%2foutside.jpg",
        "/photos/280/..%5coutside.jpg",
        "/photos/280/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/%2fetc/280/passwd",
        "//etc/280/passwd",
        "/etc/280/passwd",
        "/photos/280/photo.jpg%00.png",
        "/%ff%fe/280/x.jpg",
        "/photos/280/" + "x" * 300 + ".jpg",
        "/photos/280/" + "a%2F" * 50 + "b.jpg",
        "/photos/280/leak.jpg",
        "/./280/photos/photo.jpg",
    ],
)
async def test_traversal_attempts_are_400_or_404(
    make_client: MakeClient, torture_root: Path, target: str
) -> None:
    origin = CountingOrigin(torture_root, max_bytes=32 << 20)
    client = await make_client(origin_impl=origin, origin=(str(torture_root),), dev=True)
    status, headers, body = await raw_request(client, target)
    assert status in (400, 404), (status, body)
    assert_one_line_reason(headers["content-type"], body)
    assert all(".." not in key.split("/") for key in origin.fetches)
    assert (await raw_request(client, GOOD_PATH))[0] == 200


@pytest.mark.parametrize(
    "target",
    [
        "/photos/280/photo.jpg?" + "a" * 2000,
        "/photos/280x194c/photo.jpg#fragment",
        "/photos/%32%38%30/photo.jpg",  # percent-encoded size token
        "/photos/280x194c%2E%77%65%62%70/photo.jpg",
        "/" + "a/" * 200 + "280/x.jpg",
        "/photos/280/" + "%41" * 600,
        "/photos/ 280/photo.jpg",
        "/photos/280/ph oto.jpg",
        "/photos/280/%",
        "/photos/280/%zz.jpg",
        "/%C0%AE%C0%AE/280/x.jpg",  # overlong UTF-8 dot
        "/photos/280/photo.jpg;jsessionid=1",
        "*",
    ],
)
async def test_odd_requests_never_cause_a_server_error(dev_client: TestClient, target: str) -> None:
    status, _, body = await raw_request(dev_client, target)
    assert status < 500, (status, body[:200])
    assert (await raw_request(dev_client, GOOD_PATH))[0] == 200


# --- signing over HTTP ------------------------------------------------------------------------


@pytest.fixture
def counting_samples() -> CountingOrigin:
    return CountingOrigin(SAMPLES, max_bytes=32 << 20)


@pytest.fixture
async def signed_client(make_client: MakeClient, counting_samples: CountingOrigin) -> TestClient:
    return await make_client(
        origin_impl=counting_samples, origin=(str(SAMPLES),), secret=(SECRET, "previous-secret")
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (PHOTO_PATH, "missing signature"),
        (f"/{sign(PHOTO_PATH, 'wrong-secret')}{PHOTO_PATH}", "invalid signature"),
        (f"/{sign(PHOTO_PATH, SECRET)}{PHOTO_PATH.replace('280x194c', '2800x1940c')}", "invalid"),
        (f"/{sign(PHOTO_PATH, SECRET)[::-1]}{PHOTO_PATH}", "invalid signature"),
        (f"/{sign(PHOTO_PATH, SECRET)}/recipes/1/280x194c/cups.jpg", "invalid signature"),
        (f"/{sign('/recipes/1/280/cups.jpg', SECRET)}/recipes/1/281/cups.jpg", "invalid"),
    ],
)
async def test_403_is_short_plain_text_and_never_touches_the_origin(
    signed_client: TestClient, counting_samples: CountingOrigin, path: str, reason: str
) -> None:
    response = await signed_client.get(path)
    assert response.status == 403
    text = assert_one_line_reason(response.content_type, await response.read(), max_length=80)
    assert reason in text
    assert counting_samples.fetches == []
    assert await origin_fetches(signed_client) == 0
    following = await signed_client.get(url_for(PHOTO_KEY, "280x194c", SECRET))
    assert following.status == 200
    assert counting_samples.fetches == [PHOTO_KEY]


async def test_rotated_secrets_both_work_over_http(
    signed_client: TestClient, counting_samples: CountingOrigin
) -> None:
    for secret in (SECRET, "previous-secret"):
        response = await signed_client.get(url_for(PHOTO_KEY, "280x194c", secret))
        assert response.status == 200
    assert counting_samples.fetches == [PHOTO_KEY]  # the second came from the cache
    assert await origin_fetches(signed_client) == 1


async def test_signed_url_for_a_missing_key_is_404(signed_client: TestClient) -> None:
    response = await signed_client.get(url_for("recipes/9/none.jpg", "280", SECRET))
    assert response.status == 404
    assert_one_line_reason(response.content_type, await response.read())


async def test_health_endpoints_answer(signed_client: TestClient) -> None:
    assert (await signed_client.get("/healthz")).status == 200
    assert (await signed_client.get("/readyz")).status == 200
