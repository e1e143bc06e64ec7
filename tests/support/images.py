"""Image bytes built for tests: hostile PNGs and non-image documents."""

from __future__ import annotations

import struct
import zlib

SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="red"/></svg>'
)
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def png_claiming(width: int, height: int, rows: int = 8) -> bytes:
    """A valid PNG header for a ``width`` x ``height`` greyscale image with only ``rows`` rows
    of (compressed) pixel data: a few hundred bytes that claim to decode to width*height."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * ((width + 1) * rows), 9)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def animated_gif(
    width: int, height: int, frames: int, delay: int | list[int] = 50, border: int = 0
) -> bytes:
    """An animated GIF of ``frames`` frames of ``width`` x ``height``: flat colours that differ
    from frame to frame, with a light square in the top-left quarter and a dark bar along the
    bottom (so flips and rotations show), inside a white ``border``. Cheap to make and small
    however many frames. ``delay``: ms, one for all frames or one each."""
    import pyvips  # here: the rest of this module builds bytes by hand

    inner_width, inner_height = width - 2 * border, height - 2 * border
    square = pyvips.Image.black(max(1, inner_width // 4), max(1, inner_height // 4)) + 250
    bar = pyvips.Image.black(inner_width, max(1, inner_height // 8)) + 10
    pages = []
    for index in range(frames):
        colour = [40 + (index * 37) % 160, 40 + (index * 91) % 160, 40 + (index * 53) % 160]
        page = (pyvips.Image.black(inner_width, inner_height, bands=3) + colour).insert(
            square, 0, 0
        )
        page = page.insert(bar, 0, inner_height - bar.height)
        if border:
            page = page.embed(
                border, border, width, height, extend="background", background=[255, 255, 255]
            )
        pages.append(page.cast("uchar"))
    strip = pyvips.Image.arrayjoin(pages, across=1).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    delays = delay if isinstance(delay, list) else [delay] * frames
    strip.set_type(pyvips.GValue.array_int_type, "delay", delays)
    strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    return bytes(strip.gifsave_buffer())
