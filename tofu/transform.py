"""The canonical description of one rendition: what to fetch and what to make of it.

A ``Transform`` is immutable and hashable; it is produced only by ``tofu.urls`` (and adapted to
the client's hints by ``tofu.hints``) and is the cache key (together with the negotiated output
format and the original's version).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from tofu.formats import ImageFormat

__all__ = ["Fit", "Gravity", "ImageFormat", "Size", "Transform"]


class Fit(enum.Enum):
    """How the output box is filled."""

    INSIDE = "inside"  # scale to fit inside width x height (either may be open), aspect kept
    COVER = "cover"  # scale to cover width x height exactly, then crop the overflow


class Gravity(enum.Enum):
    """Which part of the image a COVER crop keeps."""

    CENTRE = "centre"
    ATTENTION = "attention"  # libvips smart crop: the most interesting region
    FOCAL = "focal"  # keep a given focal point as close to the centre as possible


@dataclass(frozen=True, slots=True)
class Size:
    """The size token of a URL, parsed and canonicalised (DPR already folded into the box)."""

    width: int | None
    height: int | None
    fit: Fit = Fit.INSIDE
    gravity: Gravity = Gravity.CENTRE
    focal: tuple[int, int] | None = None  # percent of width, height; only with Gravity.FOCAL
    quality: int | None = None  # None: the output format's default
    format: ImageFormat | None = None  # None: negotiated, or the source's family
    upscale: bool = False
    save_data: bool = False  # the client sent Save-Data: on; the format's lower default quality
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", _hash_fields(self))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class Transform:
    """One rendition: the original's key at the origin and the size to render it at."""

    key: str
    size: Size
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", _hash_fields(self))

    def __hash__(self) -> int:
        return self._hash


def _hash_fields(obj: Any) -> int:
    """The hash of a frozen dataclass's compared fields, computed once in ``__post_init__``:
    these objects are hashed on every cache lookup."""
    return hash(tuple(getattr(obj, f.name) for f in fields(obj) if f.compare))
