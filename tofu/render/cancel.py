"""Stopping a render that has outlived its request's deadline, from another thread.

A render runs in a worker thread, mostly inside libvips, which Python cannot interrupt. libvips
checks a per-image "kill" flag while it computes pixels, so the event loop can stop the work by
setting that flag on the image the render is computing; between steps the render also checks
the token itself. Without this, a 504 would answer the client while the render kept its thread,
CPU and memory for as long as it liked.
"""

from __future__ import annotations

import threading

import pyvips

from tofu.errors import RenderTimeout


class Cancellation:
    """Shared by the event loop (``cancel``) and the render thread (``watch``, ``check``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._image: pyvips.Image | None = None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._image is not None:
                self._image.set_kill(True)

    def check(self) -> None:
        """Raise ``RenderTimeout`` when the render has been cancelled."""
        if self._cancelled:
            raise RenderTimeout("rendering did not finish within the request deadline")

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        """``image`` is about to be computed: cancelling kills its evaluation."""
        with self._lock:
            self._image = image
            if self._cancelled:
                image.set_kill(True)
        return image

    def forget(self) -> None:
        """The render is over: let go of the image it was computing (and its pixels)."""
        with self._lock:
            self._image = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled
