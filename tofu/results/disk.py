"""The node's disk tier (``--disk-cache DIR``, ``--disk-cache-size SIZE``): one directory
shared by every worker of the node, kept by ``diskcache`` (an SQLite index, multi-process safe,
least-recently-used eviction; chosen over plain files by measurement, see docs/caching.md).

- Bounded: every entry lives inside the SQLite database (no value files, so nothing is left
  behind by a crash between a file and its row); after each write the least recently used
  entries are evicted until the database is under the size. Beyond the size the directory
  holds the write-ahead log (truncated to ``_WAL_BYTES`` at each checkpoint, which runs every
  ``_WAL_PAGES`` pages) and its 32 KB index.
- Crash-safe: a write is one SQLite transaction; an entry is checked on read (``decode_entry``)
  and a damaged one deleted. A database SQLite cannot read (truncated, overwritten, not a
  database) is removed and made anew, by the first worker to notice.
- Never fails a request: any error is a miss or a write not made, counted and logged once;
  an unusable directory (missing, a file, full) is tried again every ``_REOPEN_SECONDS``.
- Off the event loop: every call runs in this tier's own small thread pool; ``mmap`` is off,
  so a database truncated under a reader is an error, never a SIGBUS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import diskcache

from tofu.results import Damaged, OnceLog, Rendered, Stored, decode_entry, encode_entry

if TYPE_CHECKING:
    from tofu.metrics import Metrics

_THREADS = 2
_REOPEN_SECONDS = 10.0
_BUSY_SECONDS = 1.0  # SQLite waits this long for another worker's write lock, then errs
_WAL_PAGES = 256  # 1 MB of 4 KB pages between checkpoints
_WAL_BYTES = 1 << 20
_FILES = (diskcache.core.DBNAME, diskcache.core.DBNAME + "-wal", diskcache.core.DBNAME + "-shm")


class DiskTier:
    name = "disk"

    def __init__(self, directory: str, size: int, max_item: int, metrics: Metrics) -> None:
        self._directory = directory
        self._database = os.path.join(directory, diskcache.core.DBNAME)
        self._size = size
        self._max_item = max_item
        self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="disk-tier")
        self._lock = threading.Lock()
        self._cache: diskcache.Cache | None = None
        self._inode: int | None = None  # of the database this process has open
        self._reopen_at = 0.0
        self._log = OnceLog(self.name)
        self._errors = metrics.tier_errors
        self._writes = metrics.tier_writes.labels(self.name)
        self._evictions = metrics.tier_evictions.labels(self.name)
        self._bytes = metrics.tier_bytes.labels(self.name)
        self._pool.submit(self._open)  # now, in the background: the first hit needs no setup

    async def get(self, key: str) -> Stored | None:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._get, key)

    async def put(self, key: str, entry: Rendered) -> None:
        data = encode_entry(key, entry)
        if len(data) > self._max_item:
            return  # one entry must not flush the tier (the memory cache's rule, same share)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._put, key, data)

    async def close(self) -> None:
        """Close every thread's connection (the last one checkpoints the log), then the pool."""
        with self._lock:
            cache, self._cache = self._cache, None
        if cache is not None:
            everyone = threading.Barrier(_THREADS)  # one close per pool thread, each in its own

            def close_here() -> None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    everyone.wait(timeout=_BUSY_SECONDS * 5)  # a thread stuck in SQLite
                cache.close()

            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(loop.run_in_executor(self._pool, close_here) for _ in range(_THREADS))
            )
        self._pool.shutdown(wait=False)

    # --- in the tier's threads ----------------------------------------------------------

    def _get(self, key: str) -> Stored | None:
        try:
            cache = self._open()
            if cache is None:
                return None
            data = cache.get(key)
            if data is None:
                return None
            try:
                return decode_entry(key, data, self.name)
            except Damaged as exc:
                self._failed("damaged", exc)
                cache.delete(key)
                return None
        except Exception as exc:  # sqlite3, OSError, or diskcache's own: a miss, never a 500
            self._sqlite_failed(exc)
            return None

    def _put(self, key: str, data: bytes) -> None:
        try:
            cache = self._open()
            if cache is None:
                return
            cache.set(key, data)
            evicted = cache.cull()
            self._writes.inc()
            if evicted:
                self._evictions.inc(evicted)
            self._bytes.set(cache.volume())
        except Exception as exc:  # a full or read-only disk, a damaged database
            self._sqlite_failed(exc)

    def _open(self) -> diskcache.Cache | None:
        """This process's handle on the database, reopened when another worker replaced it
        (or the directory went away); None while the directory is unusable."""
        with self._lock:
            if self._cache is not None:
                try:
                    current = os.stat(self._database).st_ino
                except OSError:
                    current = None
                if current == self._inode:
                    return self._cache
                self._cache.close()
                self._cache = None
            if time.monotonic() < self._reopen_at:
                return None
            try:
                self._cache = self._connect()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    self._unusable(exc)
                    return None
                self._failed("damaged", exc)  # not a database: remove it, start anew
                self._remove_database(None)
                try:
                    self._cache = self._connect()
                except Exception as again:
                    self._unusable(again)
                    return None
            except Exception as exc:  # a file where the directory should be, no permission
                self._unusable(exc)
                return None
            self._inode = os.stat(self._database).st_ino
            self._bytes.set(self._cache.volume())  # what an earlier run left
            return self._cache

    def _connect(self) -> diskcache.Cache:
        return diskcache.Cache(
            self._directory,
            timeout=_BUSY_SECONDS,
            size_limit=self._size,
            eviction_policy="least-recently-used",
            cull_limit=0,  # evicted by ``cull`` after each write, counted
            disk_min_file_size=1 << 62,  # every value inside the database: one transaction
            sqlite_mmap_size=0,
            # No fsync: the hit path's LRU update must not wait for the disk at checkpoints.
            # A killed process loses nothing committed; a power loss may lose recent entries
            # or damage the file, which is then detected (digests, SQLite's errors) and reset.
            sqlite_synchronous=0,
            sqlite_wal_autocheckpoint=_WAL_PAGES,
            sqlite_journal_size_limit=_WAL_BYTES,
        )

    def _unusable(self, exc: BaseException) -> None:
        self._failed("unavailable", exc)
        self._reopen_at = time.monotonic() + _REOPEN_SECONDS

    def _sqlite_failed(self, exc: BaseException) -> None:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            # "database disk image is malformed", "file is not a database": start anew.
            self._failed("damaged", exc)
            with self._lock:
                if self._cache is not None:
                    self._cache.close()
                    self._cache = None
                self._remove_database(self._inode)
        else:
            self._failed("io", exc)  # disk full, read-only, locked too long: keep the rest

    def _remove_database(self, inode: int | None) -> None:
        """Remove the damaged database, unless another worker has already replaced the one
        this process had (``inode``; None: whatever is there)."""
        try:
            if inode is not None and os.stat(self._database).st_ino != inode:
                return
            for name in _FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._directory, name))
        except OSError as exc:
            self._failed("io", exc)

    def _failed(self, kind: str, exc: BaseException) -> None:
        self._errors.labels(self.name, kind).inc()
        self._log(kind, exc)
