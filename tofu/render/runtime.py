"""Process-wide set-up of libvips and the allocator for a server process."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyvips

_M_ARENA_MAX = -8  # glibc's mallopt parameter
_G_LOG_LEVEL_WARNINGS = 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4  # fatal, error, critical, warning


def configure_libvips(threads: int) -> None:
    """Process-wide libvips and allocator settings for a server.

    - No operation cache: renders never repeat an operation; the result cache is tofu's.
    - ``threads`` worker threads per libvips pipeline.
    - At most two glibc malloc arenas: each render thread would otherwise get its own, each
      keeping the large decode buffers it freed. (``render`` also hands freed memory back to
      the system after decoding: together they cut peak RSS on 18 MP originals by ~40 %.)
    - Only warnings and errors reach Python logging. pyvips routes every libvips message,
      info included (about 15 per thumbnail), through a Python callback: each one makes a
      render thread take the GIL, so it waits on the event loop up to the switch interval.
    """
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(threads)
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 2)
    handler_id = getattr(pyvips, "_log_handler_id", None)
    callback = getattr(pyvips, "_log_handler_cb", None)
    if handler_id and callback is not None:
        pyvips.glib_lib.g_log_remove_handler(b"VIPS", handler_id)
        pyvips._log_handler_id = pyvips.glib_lib.g_log_set_handler(
            b"VIPS", _G_LOG_LEVEL_WARNINGS, callback, pyvips.ffi.NULL
        )


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (with mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 -- probe for glibc
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> None:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
