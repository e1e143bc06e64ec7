"""Accept-header format negotiation, for URLs that name no output format."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from tofu.transform import ImageFormat


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


class Negotiator:
    """Picks the first format of ``preference`` that the Accept header allows (q > 0), or
    None for the source's own family. Browsers send few distinct Accept values, so answers are
    memoised per instance."""

    def __init__(self, preference: Sequence[ImageFormat]) -> None:
        self.preference = tuple(preference)
        self.choose = lru_cache(maxsize=512)(self._choose)

    def _choose(self, accept: str) -> ImageFormat | None:
        for fmt in self.preference:
            if accepted_quality(accept, fmt.media_type) > 0:
                return fmt
        return None
