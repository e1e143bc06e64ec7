"""The hit path of a disk result tier: ``diskcache`` (SQLite index, LRU) against plain files
(nginx-like hashed paths, the file's mtime as its recency), the same envelope checked by both.

    python -m bench.disk_hit [--entries 2000] [--size 30000] [--gets 20000]

Each variant stores ``--entries`` entries of ``--size`` random bytes, each wrapped in the tier's
envelope (header + blake2b digest, verified on read), then times ``--gets`` reads of random
keys, all warm in the page cache (a hot disk tier's case): wall time per get (p50, p99) and
CPU time per get. The plain-file read also refreshes the file's mtime at most once a minute,
as its LRU bookkeeping; diskcache's ``least-recently-used`` policy writes the access time to
SQLite on every get (``least-recently-stored`` does not, and is measured too).
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

import diskcache

_TOUCH_AFTER = 60.0


def _envelope(key: str, body: bytes) -> bytes:
    digest = hashlib.blake2b(key.encode() + body, digest_size=16).digest()
    return digest + body


def _check(key: str, data: bytes) -> bytes:
    body = data[16:]
    if hashlib.blake2b(key.encode() + body, digest_size=16).digest() != data[:16]:
        raise ValueError("damaged")
    return body


def _plain_path(root: Path, key: str) -> Path:
    return root / key[:2] / key[2:4] / key


def plain_files(root: Path, entries: dict[str, bytes]) -> Callable[[str], bytes]:
    for key, body in entries.items():
        path = _plain_path(root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(_envelope(key, body))
        os.replace(temporary, path)

    def get(key: str) -> bytes:
        with open(_plain_path(root, key), "rb") as file:
            stat = os.fstat(file.fileno())
            data = file.read()
            if time.time() - stat.st_mtime > _TOUCH_AFTER:
                os.utime(file.fileno())
        return _check(key, data)

    return get


def disk_cache(root: Path, entries: dict[str, bytes], policy: str) -> Callable[[str], bytes]:
    cache = diskcache.Cache(str(root), size_limit=1 << 40, eviction_policy=policy)
    for key, body in entries.items():
        cache.set(key, _envelope(key, body))

    def get(key: str) -> bytes:
        data = cache.get(key)
        assert isinstance(data, bytes)
        return _check(key, data)

    return get


def measure(get: Callable[[str], bytes], keys: list[str], gets: int) -> dict[str, float]:
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
    variants: dict[str, Callable[[Path], Callable[[str], bytes]]] = {
        "plain files": lambda root: plain_files(root, entries),
        "diskcache LRU": lambda root: disk_cache(root, entries, "least-recently-used"),
        "diskcache LRS": lambda root: disk_cache(root, entries, "least-recently-stored"),
    }
    print(f"{args.entries} entries of {args.size} bytes, {args.gets} gets of random keys")
    for name, build in variants.items():
        with tempfile.TemporaryDirectory(prefix="tofu-disk-hit-") as directory:
            result = measure(build(Path(directory)), keys, args.gets)
        print(
            f"{name:15} p50 {result['p50_us']:7.1f} us  p99 {result['p99_us']:7.1f} us  "
            f"CPU {result['cpu_us']:6.1f} us/get"
        )


if __name__ == "__main__":
    main()
