"""Accept-header format negotiation, for URLs that name no output format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from tofu.formats import FORMATS, ImageFormat


def accepted_quality(accept: str, media_type: str) -> float:
    """The q-value ``accept`` gives ``media_type`` when it names it explicitly, else 0.

    Wildcards (``image/*``, ``*/*``) do not count: browsers that cannot decode WebP or AVIF
    send them too, so only an explicit mention is trusted (as imgproxy and CDNs do).
    """
    best = 0.0
    for part in accept.split(","):
        fields = part.split(";")
        if fields[0].strip().lower() != media_type:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the Accept header chose, for URLs that name no format (part of the cache key).

    ``still``: the first preferred format the client accepts, or None for the source's own
    family. ``animated``: for animated sources, the first preferred format that animates and
    that the client accepts, else GIF (every browser decodes GIF).
    """

    still: ImageFormat | None
    animated: ImageFormat

    @property
    def tag(self) -> str:
        """A short stable name ("avif/webp"), e.g. for routing."""
        return f"{self.still.value if self.still else '-'}/{self.animated.value}"


class Negotiator:
    """Chooses formats from ``preference`` by the Accept header (q > 0); None when there is
    nothing to negotiate (an empty preference). Browsers send few distinct Accept values, so
    answers are memoised per instance."""

    def __init__(self, preference: Sequence[ImageFormat]) -> None:
        self.preference = tuple(preference)
        # WebP before GIF for animations even if only AVIF is preferred for stills: an AVIF
        # rendition of an animation would be its first frame.
        candidates = dict.fromkeys((*self.preference, ImageFormat.WEBP))
        self._animated = tuple(f for f in candidates if FORMATS[f].animation)
        self.choose = lru_cache(maxsize=512)(self._choose)

    def _choose(self, accept: str) -> Negotiated | None:
        if not self.preference:
            return None
        accepted = [f for f in self.preference if accepted_quality(accept, f.media_type) > 0]
        animated = next(
            (f for f in self._animated if accepted_quality(accept, f.media_type) > 0),
            ImageFormat.GIF,
        )
        return Negotiated(accepted[0] if accepted else None, animated)
