"""The error hierarchy. Each class carries its HTTP status: the one place that mapping lives.

Every error a request can meet is a ``TofuError`` with a one-line, client-safe ``reason``; the
server turns it into a ``text/plain`` response and logs it once. Anything else is a bug (500).
"""

from __future__ import annotations


class TofuError(Exception):
    """Base class: a request failed for a reason the client may read."""

    status: int = 500
    MAX_REASON = 300  # reasons quote keys and tokens from the URL: keep them one short line

    def __init__(self, reason: str) -> None:
        reason = reason.replace("\n", " ")
        if len(reason) > self.MAX_REASON:
            reason = reason[: self.MAX_REASON - 3] + "..."
        super().__init__(reason)
        self.reason = reason


class BadRequest(TofuError):
    """Malformed URL, absurd size, bad option value."""

    status = 400


class Forbidden(TofuError):
    """Missing or wrong signature, size not in the allowlist."""

    status = 403


class NotFound(TofuError):
    """The origin has no such key."""

    status = 404


class UriTooLong(TofuError):
    """The request path is over the length limit; refused before parsing."""

    status = 414


class UnsupportedMediaType(TofuError):
    """The original is not an image format tofu renders."""

    status = 415


class Unprocessable(TofuError):
    """The original is an image but cannot be decoded, or is over the source limits."""

    status = 422


class OriginError(TofuError):
    """The origin failed (after retries) or answered something unusable."""

    status = 502


class Overloaded(TofuError):
    """Admission control refused the request; the client should come back later."""

    status = 503

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class OriginTimeout(TofuError):
    """The origin did not answer within the fetch deadline."""

    status = 504


class RenderTimeout(OriginTimeout):
    """The request's deadline passed before its rendition was made (504, as tofu is the
    gateway the CDN waited on)."""


def error_for_status(status: int, reason: str) -> TofuError:
    """The error a sibling worker answered with, as ours (the status -> class direction)."""
    classes = {cls.status: cls for cls in TofuError.__subclasses__()}
    return classes.get(status, OriginError)(reason)
