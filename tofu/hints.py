"""Client Hints and Save-Data: request headers that adapt a URL's size and quality.

With ``--client-hints``, a URL without an ``@`` DPR takes the device pixel ratio from
``Sec-CH-DPR`` (or the legacy ``DPR``), and a size with the ``w`` option takes its width from
``Sec-CH-Width`` (or ``Width``: the width the image is drawn at, in device pixels). With
``--save-data``, ``Save-Data: on`` picks the format's lower default quality for URLs that name
none. The result is folded into the ``Transform`` (the cache key) and every header consulted is
named in ``Vary`` (``ClientHints.vary``: errors included, Save-Data only where it changes the
bytes), so caches keep the variants apart.

Hints are rounded to a few steps so that caches hold few variants, and never make an output
larger than the URL's box times the highest DPR (4) or ``--max-output-side``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping
from functools import lru_cache

from tofu.formats import FORMATS
from tofu.transform import Transform

MAX_DPR = 4.0
# A DPR hint is rounded up to the next of these (1.25 -> 1.5, 2.625 -> 3): few renditions, and
# never one less sharp than the screen.
DPR_STEPS = (1.0, 1.5, 2.0, 3.0, 4.0)
# A width hint is rounded up to the next eighth of the URL's width (up to MAX_DPR times it).
WIDTH_STEPS_PER_BOX = 8

ACCEPT_CH = "Sec-CH-DPR, Sec-CH-Width, Sec-CH-Viewport-Width, DPR, Width, Viewport-Width"
DPR_HEADERS = ("Sec-CH-DPR", "DPR")  # in order of precedence
WIDTH_HEADERS = ("Sec-CH-Width", "Width")
SAVE_DATA = "Save-Data"
# A hint's number: ASCII digits with at most one dot (sf-decimal, as the Client Hints drafts
# define them; the legacy hints' values too). float() alone would also read "1_0" as 10, and
# "1e1", "+3", non-ASCII digits, "nan" and "inf". Ten digits each side keep it finite.
_HINT_NUMBER = re.compile(r"[0-9]{1,10}(?:\.[0-9]{0,10})?|\.[0-9]{1,10}")
# What a worker forwards when it asks a sibling for a rendition (tofu.peers).
HINT_HEADERS = (*DPR_HEADERS, *WIDTH_HEADERS, SAVE_DATA)
# Save-Data only lowers a default quality: the bytes of the other formats do not change.
_QUALITY_MEDIA_TYPES = frozenset(
    spec.media_type for spec in FORMATS.values() if spec.default_quality is not None
)


class Adapt(enum.Enum):
    """Which hints may change a URL's size (decided by its size token)."""

    NONE = "none"  # the URL has an @ DPR: no hint applies
    DPR = "dpr"  # the DPR hint scales the box
    WIDTH = "width"  # the "w" option: the width hint sets the box width, else the DPR hint


class ClientHints:
    """Adapts parsed transforms to a request's hints; built once per server from the config."""

    def __init__(self, *, client_hints: bool, save_data: bool, max_side: int) -> None:
        self.client_hints = client_hints
        self.save_data = save_data
        self._max_side = max_side
        self._vary = lru_cache(maxsize=64)(_join)

    @property
    def enabled(self) -> bool:
        return self.client_hints or self.save_data

    def adapt(
        self, transform: Transform, adapt: Adapt, headers: Mapping[str, str]
    ) -> tuple[Transform, tuple[str, ...]]:
        """The transform for this request, and the request headers it depends on (for Vary)."""
        size = transform.size
        vary: tuple[str, ...] = ()
        factor = 1.0
        if self.client_hints and adapt is not Adapt.NONE:
            width = None
            if adapt is Adapt.WIDTH and size.width:  # the parser makes "w" need a width
                vary += WIDTH_HEADERS
                width = _first_number(headers, WIDTH_HEADERS)
            vary += DPR_HEADERS  # consulted when there is no width hint
            if width is not None and size.width:
                factor = _width_factor(width, size.width)
            else:
                dpr = _first_number(headers, DPR_HEADERS)
                factor = 1.0 if dpr is None else _dpr_step(dpr)
            factor = min(factor, self._max_side / max(size.width or 0, size.height or 0))
        save_data = False
        if (
            self.save_data
            and size.quality is None
            and (size.format is None or FORMATS[size.format].default_quality is not None)
        ):
            vary += (SAVE_DATA,)
            save_data = headers.get(SAVE_DATA, "").strip().lower() == "on"
        if factor == 1.0 and not save_data:
            return transform, vary
        size = dataclasses.replace(
            size,
            width=max(1, round(size.width * factor)) if size.width else None,
            height=max(1, round(size.height * factor)) if size.height else None,
            save_data=save_data,
        )
        return Transform(transform.key, size), vary

    def vary(self, names: tuple[str, ...], media_type: str | None) -> str | None:
        """The Vary header of a response to a request that consulted the headers ``names``
        (Accept, hints), or None. An error (``media_type`` None) names them all: any of them may
        have caused it. A rendition names Save-Data only if its format takes a quality.
        Memoised: a few combinations recur."""
        return self._vary(names, media_type is None or media_type in _QUALITY_MEDIA_TYPES)


def _join(names: tuple[str, ...], quality_applies: bool) -> str | None:
    if not quality_applies:
        names = tuple(name for name in names if name != SAVE_DATA)
    return ", ".join(names) or None


def _first_number(headers: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    """The first of ``names`` present with a positive number; malformed hints are ignored
    (they are advice, not a reason to fail)."""
    for name in names:
        text = headers.get(name, "").strip(" \t")  # HTTP's optional whitespace
        if _HINT_NUMBER.fullmatch(text) is None:
            continue
        value = float(text)
        if value > 0:
            return value
    return None


def _dpr_step(dpr: float) -> float:
    """``dpr`` clamped to 1-4 and rounded up to the next step."""
    return next((step for step in DPR_STEPS if step >= dpr - 1e-9), MAX_DPR)


def _width_factor(width: float, box_width: int) -> float:
    """How much to scale a box ``box_width`` wide to draw ``width`` device pixels: rounded up
    to an eighth, at least one eighth and at most ``MAX_DPR``."""
    eighths = math.ceil(width / box_width * WIDTH_STEPS_PER_BOX - 1e-9)
    return min(max(eighths, 1) / WIDTH_STEPS_PER_BOX, MAX_DPR)
