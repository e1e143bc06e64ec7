"""The hit path of a disk result tier: tofu's ``DiskTier`` (diskcache: an SQLite index, LRU)
against plain files (nginx-like hashed paths, the file's mtime as its recency), with the same
checked entry format (``tofu.results.encode_entry`` / ``decode_entry``) for both.

    python -m bench.disk_hit [--entries 2000] [--size 30000] [--gets 20000]

Each variant stores ``--entries`` renditions of ``--size`` random bytes, then times ``--gets``
reads of random keys, all warm in the page cache (a hot disk tier's case), in one thread:
wall time per get (p50, p99) and CPU time per get. The plain-file read also refreshes the
file's mtime at most once a minute, as its LRU bookkeeping; ``DiskTier`` (diskcache's
``least-recently-used`` policy) writes the access time to SQLite on every get; diskcache with
``least-recently-stored`` (no write on a get, but the oldest written go first, hot or not) is
measured too, with the tier's other settings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tofu.metrics import Metrics
from tofu.results import Stored, decode_entry, encode_entry
from tofu.results.disk import DiskTier

_TOUCH_AFTER = 60.0


class Body:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.media_type = "image/jpeg"
        self.etag = '"e"'
        self.version = "v1"
        self.last_modified = 1_700_000_000.0


def _plain_path(root: Path, key: str) -> Path:
    return root / key[:2] / key[2:4] / key


def plain_files(root: Path, entries: dict[str, bytes]) -> Callable[[str], Stored]:
    for key, body in entries.items():
        path = _plain_path(root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(encode_entry(key, Body(body)))
        os.replace(temporary, path)

    def get(key: str) -> Stored:
        with open(_plain_path(root, key), "rb") as file:
            stat = os.fstat(file.fileno())
            data = file.read()
            if time.time() - stat.st_mtime > _TOUCH_AFTER:
                os.utime(file.fileno())
        return decode_entry(key, data, "disk")

    return get


def disk_tier(root: Path, entries: dict[str, bytes]) -> Callable[[str], Stored]:
    tier = DiskTier(str(root), 1 << 40, 1 << 30, Metrics())
    for key, body in entries.items():
        tier._put(key, encode_entry(key, Body(body)))

    def get(key: str) -> Stored:
        stored = tier._get(key)  # the synchronous hit path its threads run
        assert stored is not None
        return stored

    return get


def least_recently_stored(root: Path, entries: dict[str, bytes]) -> Callable[[str], Stored]:
    tier = DiskTier(str(root), 1 << 40, 1 << 30, Metrics())
    cache = tier._connect()
    cache.reset("eviction_policy", "least-recently-stored")
    for key, body in entries.items():
        cache.set(key, encode_entry(key, Body(body)))

    def get(key: str) -> Stored:
        data = cache.get(key)
        assert isinstance(data, bytes)
        return decode_entry(key, data, "disk")

    return get


def measure(get: Callable[[str], Stored], keys: list[str], gets: int) -> dict[str, float]:
    order = [random.choice(keys) for _ in range(gets)]
    for key in order[:500]:  # warm up: page cache, SQLite connection
        get(key)
    wall: list[float] = []
    cpu_started = time.process_time()
    for key in order:
        started = time.perf_counter()
        get(key)
        wall.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu_started
    cuts = statistics.quantiles(wall, n=100)
    return {"p50_us": cuts[49] * 1e6, "p99_us": cuts[98] * 1e6, "cpu_us": cpu / gets * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.disk_hit", description=__doc__)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--size", type=int, default=30_000, help="bytes per entry")
    parser.add_argument("--gets", type=int, default=20_000)
    args = parser.parse_args()
    random.seed(1)
    entries = {
        hashlib.sha256(str(n).encode()).hexdigest(): random.randbytes(args.size)
        for n in range(args.entries)
    }
    keys = list(entries)
    variants: dict[str, Callable[[Path], Callable[[str], Stored]]] = {
        "plain files": lambda root: plain_files(root, entries),
        "DiskTier (LRU)": lambda root: disk_tier(root, entries),
        "diskcache LRS": lambda root: least_recently_stored(root, entries),
    }
    print(f"{args.entries} entries of {args.size} bytes, {args.gets} gets of random keys")
    for name, build in variants.items():
        with tempfile.TemporaryDirectory(prefix="tofu-disk-hit-") as directory:
            result = measure(build(Path(directory)), keys, args.gets)
        print(
            f"{name:14} p50 {result['p50_us']:7.1f} us  p99 {result['p99_us']:7.1f} us  "
            f"CPU {result['cpu_us']:6.1f} us/get"
        )


if __name__ == "__main__":
    main()
