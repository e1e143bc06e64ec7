"""Signed URLs: HMAC-SHA256 over the path, URL-safe base64, several secrets for rotation.

The signature is the first path segment: ``/{signature}/{prefix...}/{size}/{name}``. It covers
the rest of the path exactly as sent (still percent-encoded). The query string is not signed
because nothing in it affects the output.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from tofu.errors import Forbidden
from tofu.transform import Size
from tofu.urls import ParsedPath, build_path


def sign(path: str, secret: str) -> str:
    """The signature of ``path`` (which starts with ``/``) under ``secret``."""
    digest = hmac.new(secret.encode(), path.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signed_path(path: str, secret: str) -> str:
    """``path`` with its signature prepended, ready to append to the server's base URL."""
    return f"/{sign(path, secret)}{path}"


def url_for(key: str, size: str, secret: str, base_url: str = "") -> str:
    """Mint the signed URL an app embeds: ``url_for("recipes/1/a.jpg", "280x194c", SECRET)``."""
    return base_url.rstrip("/") + signed_path(build_path(key, size), secret)


class Guard:
    """Decides whether a parsed request may be served: a valid signature, or an allowed size.

    With secrets, a signed URL is always accepted; an unsigned one only if its size is in the
    allowlist. Without secrets, the allowlist alone decides. ``open`` (dev mode) allows all.
    """

    def __init__(
        self, secrets: Iterable[str], allowed_sizes: Iterable[Size], *, open: bool = False
    ) -> None:
        self._keys = [s.encode() for s in secrets]
        self._allowed = frozenset(allowed_sizes)
        self._open = open and not self._keys and not self._allowed

    @property
    def expects_signatures(self) -> bool:
        return bool(self._keys)

    def check(self, parsed: ParsedPath) -> None:
        if parsed.signature is not None:
            message = parsed.signed_path.encode()
            # Compare the encodings, not the decoded bytes: base64 decoding ignores the unused
            # low bits of the last character, so several strings would pass for one signature.
            given = parsed.signature.encode()
            for key in self._keys:
                digest = hmac.new(key, message, hashlib.sha256).digest()
                if hmac.compare_digest(base64.urlsafe_b64encode(digest).rstrip(b"="), given):
                    return
            raise Forbidden("invalid signature")
        if self._open or parsed.transform.size in self._allowed:
            return
        if self._keys:
            raise Forbidden("missing signature")
        raise Forbidden("size not in the allowlist")
