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


def animated_gif(width: int, height: int, frames: int, delay: int = 50) -> bytes:
    """An animated GIF of ``frames`` frames of ``width`` x ``height``: flat colours that differ
    from frame to frame, with a light square in the top-left quarter (so flips and rotations
    show). Cheap to make and small however many frames."""
    import pyvips  # here: the rest of this module builds bytes by hand

    square = pyvips.Image.black(max(1, width // 4), max(1, height // 4)) + 250
    pages = []
    for index in range(frames):
        colour = [(index * 37) % 200, (index * 91) % 200, (index * 53) % 200]
        page = (pyvips.Image.black(width, height, bands=3) + colour).insert(square, 0, 0)
        pages.append(page.cast("uchar"))
    strip = pyvips.Image.arrayjoin(pages, across=1).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [delay] * frames)
    strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    return bytes(strip.gifsave_buffer())
