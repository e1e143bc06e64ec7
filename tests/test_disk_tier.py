"""The disk result tier (``--disk-cache``): bounded, shared by a node's workers, kept across
restarts, crash-safe, and never the reason a request fails.

The first tests drive ``DiskTier`` directly on a real directory (SQLite on disk, files damaged
by the test); the others run real ``tofu serve`` processes, restarted, killed and starved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import diskcache
import pytest

from tests.support.metrics import metric_sum, scrape
from tests.support.servers import SAMPLES, TofuProcess, get_fresh, start_tofu, width_target
from tofu.metrics import Metrics
from tofu.render import RenderSettings
from tofu.results import FORMAT_VERSION, Stored, encode_entry, rendition_key
from tofu.results.disk import DiskTier
from tofu.signing import signed_path
from tofu.transform import Size, Transform

ENTRY_BYTES = 30_000
# Beyond its size the directory holds SQLite's write-ahead log (truncated to 1 MB at each
# checkpoint, every 1 MB of pages) and its 32 KB index, plus the write under way.
OVERHEAD_BYTES = (1 << 20) + (1 << 20) + (32 << 10) + 2 * ENTRY_BYTES
IMAGES = sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.jpg"))


@dataclass(frozen=True)
class Body:
    body: bytes
    media_type: str = "image/jpeg"
    etag: str = '"e"'
    version: str = "v1"
    last_modified: float | None = 1_700_000_000.0
    quality: int | None = 80


def entry(n: int) -> Body:
    return Body(random.Random(n).randbytes(ENTRY_BYTES))


def key(n: int) -> str:
    return rendition_key(Transform(f"k/{n}.jpg", Size(100 + n, None)), None, RenderSettings())


def tier(directory: Path, size: int = 64 << 20) -> tuple[DiskTier, Metrics]:
    metrics = Metrics()
    return DiskTier(str(directory), size, size // 4, metrics), metrics


def errors(metrics: Metrics, kind: str) -> float:
    return metrics.tier_errors.labels("disk", kind)._value.get()


def directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


# --- the tier on its own ------------------------------------------------------------------


def test_the_key_is_the_canonical_rendition_and_the_format_version() -> None:
    """Equal renditions give equal keys in any process (no ``hash()``); the size, the
    negotiated format and the render settings that change output give other keys."""
    a = Transform("recipes/1/cups.jpg", Size(280, None))
    assert rendition_key(a, None, RenderSettings()) == rendition_key(
        Transform("recipes/1/cups.jpg", Size(280, None)), None, RenderSettings()
    )
    others = {
        rendition_key(Transform("recipes/1/cups.jpg", Size(281, None)), None, RenderSettings()),
        rendition_key(a, None, RenderSettings(avif_effort=4)),
        rendition_key(Transform("recipes/1/cup.jpg", Size(280, None)), None, RenderSettings()),
    }
    assert rendition_key(a, None, RenderSettings()) not in others and len(others) == 3
    assert FORMAT_VERSION >= 1


async def test_round_trip_keeps_what_http_needs(tmp_path: Path) -> None:
    disk, _ = tier(tmp_path / "disk")
    await disk.put(key(1), entry(1))
    stored = await disk.get(key(1))
    assert stored == Stored(entry(1).body, "image/jpeg", '"e"', "v1", 1_700_000_000.0, 80, "disk")
    assert await disk.get(key(2)) is None
    await disk.close()


async def test_bounded_with_least_recently_used_evicted_first(tmp_path: Path) -> None:
    """Far more than the size is written: the directory stays within the size plus SQLite's
    fixed overhead, evictions are counted, and an entry read often survives them all."""
    size = 2 << 20
    disk, metrics = tier(tmp_path / "disk", size)
    await disk.put(key(0), entry(0))
    largest = 0
    for n in range(1, 300):
        await disk.put(key(n), entry(n))
        if n % 5 == 0:
            assert await disk.get(key(0)) is not None, f"the hot entry was evicted at {n}"
        largest = max(largest, directory_bytes(tmp_path / "disk"))
    assert largest <= size + OVERHEAD_BYTES, largest
    assert metrics.tier_evictions.labels("disk")._value.get() >= 300 - size // ENTRY_BYTES
    assert await disk.get(key(1)) is None  # written early, never read: gone
    assert await disk.get(key(299)) is not None
    assert 0 < metrics.tier_bytes.labels("disk")._value.get() <= size + ENTRY_BYTES
    await disk.close()


async def test_an_entry_over_its_share_is_not_written(tmp_path: Path) -> None:
    disk, metrics = tier(tmp_path / "disk", 100_000)  # an entry may take a quarter
    await disk.put(key(1), entry(1))
    assert await disk.get(key(1)) is None
    assert metrics.tier_writes.labels("disk")._value.get() == 0
    await disk.close()


async def test_an_entry_keeps_what_its_response_says(tmp_path: Path) -> None:
    """Everything the response is made of comes back, the encoder quality (X-Image-Quality)
    included: a disk hit answers as the render did."""
    disk, _ = tier(tmp_path / "disk")
    await disk.put(key(1), entry(1))
    stored = await disk.get(key(1))
    assert stored is not None
    made = entry(1)
    assert (stored.body, stored.media_type, stored.etag, stored.version) == (
        made.body,
        made.media_type,
        made.etag,
        made.version,
    )
    assert (stored.last_modified, stored.quality) == (made.last_modified, made.quality)
    await disk.close()


def _database(directory: Path) -> Path:
    return directory / diskcache.core.DBNAME


async def test_a_flipped_byte_in_an_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    directory = tmp_path / "disk"
    disk, _ = tier(directory)
    await disk.put(key(1), entry(1))
    await disk.put(key(2), entry(2))
    await disk.close()
    # Everything into the database file itself (closing checkpoints too, but only if every
    # connection is gone by then, which a loaded machine does not promise).
    with contextlib.closing(sqlite3.connect(_database(directory))) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(_database(directory).read_bytes())
    at = data.find(entry(1).body[1000:1016])
    assert at > 0
    data[at] ^= 0xFF
    _database(directory).write_bytes(data)

    disk, metrics = tier(directory)
    assert await disk.get(key(1)) is None
    assert errors(metrics, "damaged") == 1
    assert await disk.get(key(1)) is None  # removed: found absent, not damaged again
    assert errors(metrics, "damaged") == 1
    assert (await disk.get(key(2))) is not None  # the rest is kept
    await disk.close()


async def test_an_entry_of_another_key_is_never_served(tmp_path: Path) -> None:
    """A valid entry stored under the wrong key (a foreign write, a bug, a hash collision)."""
    directory = tmp_path / "disk"
    disk, metrics = tier(directory)
    await disk.put(key(1), entry(1))
    with diskcache.Cache(str(directory)) as raw:
        raw.set(key(2), encode_entry(key(1), entry(1)))
    assert await disk.get(key(2)) is None
    assert errors(metrics, "damaged") == 1
    assert await disk.get(key(1)) is not None
    await disk.close()


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
async def test_a_damaged_database_is_a_miss_and_made_anew(tmp_path: Path, damage: str) -> None:
    """A database cut short (a disk that lost its tail) or replaced by another file: every
    lookup is a miss, the file is removed and the tier works again."""
    directory = tmp_path / "disk"
    disk, _ = tier(directory)
    for n in range(20):
        await disk.put(key(n), entry(n))
    await disk.close()
    database = _database(directory)
    if damage == "truncated":
        os.truncate(database, database.stat().st_size // 2)
    else:
        database.write_bytes((SAMPLES / IMAGES[0]).read_bytes())

    disk, metrics = tier(directory)
    served = [await disk.get(key(n)) for n in range(20)]
    # SQLite may still read the entries in the pages left; none may be wrong.
    assert all(s is None or s.body == entry(n).body for n, s in enumerate(served))
    assert None in served
    assert errors(metrics, "damaged") >= 1
    await disk.put(key(99), entry(99))
    assert (await disk.get(key(99))) is not None, "the tier was not made anew"
    await disk.close()


async def test_a_file_where_the_directory_should_be_fails_nothing(tmp_path: Path) -> None:
    path = tmp_path / "not-a-directory"
    path.write_bytes(b"x")
    disk, metrics = tier(path)
    await disk.put(key(1), entry(1))
    assert await disk.get(key(1)) is None
    assert errors(metrics, "unavailable") == 1  # tried again only after a pause
    assert path.read_bytes() == b"x"
    await disk.close()


# --- real nodes ----------------------------------------------------------------------------


def node_args(origin: Path, disk: Path | None, workers: int = 2, size: str = "64M") -> list[str]:
    tier_args = [] if disk is None else ["--disk-cache", str(disk), "--disk-cache-size", size]
    return [
        "--origin",
        str(origin),
        "--dev",
        "--workers",
        str(workers),
        "--drain-seconds",
        "0",
        "--negotiate",
        "none",
        *tier_args,
    ]


def start_node(
    args: list[str], tmp_path: Path, workers: int = 2, port: int | None = None
) -> TofuProcess:
    """A node, once every worker listens. A restart on the same port appends to the same log:
    only its own "listening" lines count."""
    log = tmp_path / f"tofu-{port}.log"
    earlier = (
        log.read_text(errors="replace").count("tofu listening") if port and log.exists() else 0
    )
    node = start_tofu(args, tmp_path, port=port)
    deadline = time.monotonic() + 30
    while node.log().count("tofu listening") < earlier + workers:
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)
    return node


get = get_fresh
target = width_target


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    copy = tmp_path / "origin"
    shutil.copytree(SAMPLES, copy)
    return copy


def delta(before: str, after: str, name: str, **labels: str) -> float:
    return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)


def test_two_workers_render_and_write_once_and_a_restart_serves_without_originals(
    tmp_path: Path, origin: Path, nodes: list[TofuProcess]
) -> None:
    disk = tmp_path / "disk"
    targets = [target(image, width) for image in IMAGES for width in (120, 200)]
    node = start_node(node_args(origin, disk), tmp_path)
    nodes.append(node)
    before = scrape(node.url)
    first: dict[str, bytes] = {}
    for _ in range(4):  # each over new connections: both workers receive some of each
        for each in targets:
            status, body = get(node, each)
            assert status == 200
            assert first.setdefault(each, body) == body
    deadline = time.monotonic() + 10
    while metric_sum(scrape(node.url), "tofu_tier_writes_total") < len(targets):
        assert time.monotonic() < deadline, "writes did not land"
        time.sleep(0.05)
    after = scrape(node.url)
    assert delta(before, after, "tofu_renders_total") == len(targets)  # once per node
    assert delta(before, after, "tofu_tier_writes_total", tier="disk") == len(targets)
    node.stop()

    shutil.rmtree(origin)
    origin.mkdir()
    node = start_node(node_args(origin, disk), tmp_path, port=node.port)
    nodes.append(node)
    for _ in range(3):
        for each in targets:
            assert get(node, each) == (200, first[each])
    after = scrape(node.url)
    assert metric_sum(after, "tofu_renders_total") == 0
    assert metric_sum(after, "tofu_tier_hits_total", tier="disk") == len(targets)
    assert metric_sum(after, "tofu_tier_writes_total", tier="disk") == 0
    assert metric_sum(after, "tofu_requests_total", cache="disk") >= 1
    assert get(node, target(IMAGES[0], 333))[0] == 404  # never rendered: needs the original


def test_an_original_changed_at_its_key_is_not_served_from_disk(
    tmp_path: Path, origin: Path, nodes: list[TofuProcess]
) -> None:
    """The rule: an entry is served only when no other version of its original is known.
    After a restart the node knows none and serves the entry; once it fetches the original
    again (for another rendition) and finds a new version, the older entries are misses and
    their next render replaces them."""
    disk = tmp_path / "disk"
    image = IMAGES[0]
    node = start_node(node_args(origin, disk, workers=1), tmp_path, workers=1)
    nodes.append(node)
    status, old = get(node, target(image, 150))
    assert status == 200
    node.stop()
    # Another picture at the same key, with another mtime and size: another version.
    shutil.copy(SAMPLES / IMAGES[1], origin / image)
    node = start_node(node_args(origin, disk, workers=1), tmp_path, workers=1, port=node.port)
    nodes.append(node)
    assert get(node, target(image, 150)) == (200, old)  # no version known yet
    assert get(node, target(image, 151))[0] == 200  # fetches the original: the new version
    node.stop()  # memory forgets; the disk keeps the stale 150 and the fresh 151
    node = start_node(node_args(origin, disk, workers=1), tmp_path, workers=1, port=node.port)
    nodes.append(node)
    assert get(node, target(image, 151))[0] == 200  # from disk: no version known yet
    assert get(node, target(image, 152))[0] == 200  # fetched: the version is known now
    status, new = get(node, target(image, 150))
    assert status == 200 and new != old
    after = scrape(node.url)
    assert metric_sum(after, "tofu_tier_stale_total", tier="disk") == 1


def test_kill_9_during_concurrent_writes_serves_nothing_wrong(
    tmp_path: Path, origin: Path, nodes: list[TofuProcess]
) -> None:
    disk = tmp_path / "disk"
    targets = [target(image, width) for image in IMAGES for width in range(100, 160)]
    node = start_node(node_args(origin, disk), tmp_path)
    nodes.append(node)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(get, node, each) for each in targets]
        deadline = time.monotonic() + 60
        while metric_sum(scrape(node.url), "tofu_tier_writes_total") < len(targets) // 4:
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.01)
        os.killpg(node.process.pid, signal.SIGKILL)  # master and workers, mid-write
        node.process.wait()
        for future in futures:
            with suppress(OSError, http.client.HTTPException):
                future.result()

    node = start_node(node_args(origin, disk), tmp_path, port=node.port)
    nodes.append(node)
    served = {each: get(node, each) for each in targets}
    hits = metric_sum(scrape(node.url), "tofu_tier_hits_total", tier="disk")
    node.stop()
    reference = start_node(node_args(origin, None), tmp_path)
    nodes.append(reference)
    for each in targets:
        assert served[each] == get(reference, each), each
    assert hits >= len(targets) // 4  # what had been written survived the kill


def test_a_directory_replaced_by_a_file_fails_no_request(
    tmp_path: Path, origin: Path, nodes: list[TofuProcess]
) -> None:
    path = tmp_path / "disk"
    path.write_bytes(b"not a directory")
    node = start_node(node_args(origin, path, workers=1), tmp_path, workers=1)
    nodes.append(node)
    for width in (100, 110, 120, 100):
        assert get(node, target(IMAGES[0], width))[0] == 200
    metrics = scrape(node.url)
    assert metric_sum(metrics, "tofu_tier_errors_total", tier="disk", kind="unavailable") >= 1
    assert node.log().count("result tier disk: unavailable") == 1  # logged once
    assert path.read_bytes() == b"not a directory"


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 640 KB tmpfs mounted for the test (root only, as a full or read-only disk cannot be
    made otherwise when the tests run as root: permissions do not stop root)."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_full_then_read_only_disk_fails_no_request(
    tmp_path: Path, origin: Path, nodes: list[TofuProcess], small_filesystem: Path
) -> None:
    node = start_node(node_args(origin, small_filesystem, 1, "64M"), tmp_path, workers=1)
    nodes.append(node)
    widths = range(600, 640)
    for width in widths:  # far more than 640 KB of renditions
        assert get(node, target(IMAGES[0], width))[0] == 200
    time.sleep(0.5)
    metrics = scrape(node.url)
    assert metric_sum(metrics, "tofu_tier_errors_total", tier="disk", kind="io") >= 1
    written = metric_sum(metrics, "tofu_tier_writes_total", tier="disk")
    assert 0 < written < len(widths)
    assert node.log().count("result tier disk: io") == 1

    node.stop()
    # Read-only (remounted while nothing has it open: a busy filesystem cannot be).
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    node = start_node(
        node_args(origin, small_filesystem, 1, "64M"), tmp_path, workers=1, port=node.port
    )
    nodes.append(node)
    for width in (*widths, 700, 701):  # SQLite cannot open it: memory and renders serve
        assert get(node, target(IMAGES[0], width))[0] == 200
    metrics = scrape(node.url)
    assert metric_sum(metrics, "tofu_tier_errors_total", tier="disk", kind="unavailable") >= 1
    assert metric_sum(metrics, "tofu_renders_total") == len(widths) + 2
    assert node.log().count("result tier disk: unavailable") == 1


def test_hit_path_runs_off_the_event_loop(tmp_path: Path) -> None:
    """A get from a running loop runs in the tier's threads: the loop's thread never reads."""
    disk, _ = tier(tmp_path / "disk")
    seen: list[str] = []
    original = disk._get

    def spy(k: str) -> Stored | None:
        import threading

        seen.append(threading.current_thread().name)
        return original(k)

    disk._get = spy  # type: ignore[method-assign]

    async def run() -> None:
        await disk.put(key(1), entry(1))
        assert await disk.get(key(1)) is not None
        await disk.close()

    asyncio.run(run())
    assert seen and all(name.startswith("disk-tier") for name in seen)


def test_a_rotated_signing_key_keeps_the_tier(
    tmp_path: Path, origin: Path, nodes: list[TofuProcess]
) -> None:
    """The tier's key is the rendition, never the URL's signature: a node restarted with a new
    secret serves the same renditions, signed with it, from disk."""
    old_secret, new_secret = "a" * 40, "b" * 40
    disk = tmp_path / "disk"
    args = ["--origin", str(origin), "--workers", "1", "--drain-seconds", "0"]
    args += ["--negotiate", "none", "--disk-cache", str(disk)]
    paths = [target(image, 180)[1:] for image in IMAGES]
    node = start_node([*args, "--secret", old_secret], tmp_path, workers=1)
    nodes.append(node)
    first = [get(node, signed_path("/" + path, old_secret)) for path in paths]
    assert all(status == 200 for status, _ in first)
    node.stop()
    node = start_node([*args, "--secret", new_secret], tmp_path, workers=1, port=node.port)
    nodes.append(node)
    assert get(node, signed_path("/" + paths[0], old_secret))[0] == 403
    assert [get(node, signed_path("/" + path, new_secret)) for path in paths] == first
    assert metric_sum(scrape(node.url), "tofu_renders_total") == 0
