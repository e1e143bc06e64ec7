"""Process-wide set-up of libvips for a server process, and returning freed memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyvips

_G_LOG_LEVEL_WARNINGS = 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4  # fatal, error, critical, warning

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def configure_libvips(threads: int) -> None:
    """Process-wide libvips settings for a server.

    - No operation cache: renders never repeat an operation; the result cache is tofu's.
    - ``threads`` worker threads per libvips pipeline.
    - Only warnings and errors reach Python logging. pyvips routes every libvips message,
      info included (about 15 per thumbnail), through a Python callback: each one makes a
      render thread take the GIL, so it waits on the event loop up to the switch interval.
    """
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(threads)
    handler_id = getattr(pyvips, "_log_handler_id", None)
    callback = getattr(pyvips, "_log_handler_cb", None)
    if handler_id and callback is not None:
        pyvips.glib_lib.g_log_remove_handler(b"VIPS", handler_id)
        pyvips._log_handler_id = pyvips.glib_lib.g_log_set_handler(
            b"VIPS", _G_LOG_LEVEL_WARNINGS, callback, pyvips.ffi.NULL
        )


def configure_malloc() -> None:
    """glibc malloc settings for a render process; call before its threads start.

    A render allocates a few MB at once (the decoded pixels, libvips' buffers) and frees them
    a few ms later. With glibc's defaults those blocks are mmapped or trimmed off the heap when
    freed, so every render faults its pages in again (about 500 page faults and 1.5 ms of
    system time per W1 render). Keeping them (mmap only from 32 MB, trimming only beyond
    128 MB free) took 2 ms of CPU off each W1 request for 30 MB more RSS per node; two arenas
    instead of one per thread keep that retained memory from multiplying by the thread count.
    Big originals still hand their memory back (``release_freed_memory``)."""
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    libc.mallopt(_M_ARENA_MAX, 2)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (with malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 -- probe for glibc
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps them otherwise).

    Not free: the next allocations fault those pages in again. ``render`` calls it only after
    decoding a large original, whose buffers would otherwise stay in RSS: measured on the
    W1 mix, trimming after every render cost 20-30 % more CPU per request."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
