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
from tofu.urls import ParsedPath, SizeSpec, build_path


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

    With secrets, a signed URL is always accepted, however its size is spelled; an unsigned one
    only if its size is in the allowlist and spelled canonically (``size_token``), so that
    unsigned clients cannot multiply a CDN's cache keys with aliases (``0280``, ``140@2x``).
    Without secrets, the allowlist alone decides. ``open`` (dev mode) allows all. A preset's
    name is a canonical spelling of its size too.

    ``presets_only`` refuses every size that is not a preset, signed or not, and serves the
    presets unsigned: the operator chose every rendition there is, so a signature would
    protect nothing more (the cache keys are bounded by presets x originals).
    """

    def __init__(
        self,
        secrets: Iterable[str],
        allowed_sizes: Iterable[SizeSpec],
        *,
        open: bool = False,
        presets_only: bool = False,
    ) -> None:
        self._keys = [s.encode() for s in secrets]
        self._allowed = {spec: spec.token for spec in allowed_sizes}
        self._presets_only = presets_only
        self._open = open and not self._keys and not self._allowed and not presets_only

    @property
    def expects_signatures(self) -> bool:
        return bool(self._keys)

    def check(self, parsed: ParsedPath) -> ParsedPath:
        """The reading of ``parsed`` to serve, or ``Forbidden`` with the reason."""
        if self._presets_only:
            return self._check_preset(parsed)
        if parsed.signature is not None:
            if self._signed(parsed):
                return parsed
            # A key's own first segment may look like a signature: read unsigned, the path may
            # be allowed as it stands.
            unsigned = parsed.unsigned()
            canonical = self._allowed.get(unsigned.spec)
            if canonical is not None and unsigned.size_token in (canonical, unsigned.preset):
                return unsigned
            raise Forbidden("invalid signature")
        if self._open:
            return parsed
        canonical = self._allowed.get(parsed.spec)
        if canonical is None:
            raise Forbidden("missing signature" if self._keys else "size not in the allowlist")
        if parsed.size_token not in (canonical, parsed.preset):
            raise Forbidden(f"size {parsed.size_token!r} is allowed unsigned only as {canonical!r}")
        return parsed

    def _check_preset(self, parsed: ParsedPath) -> ParsedPath:
        """``--presets-only``: a preset, spelled as its name, signed or not; nothing else."""
        if parsed.preset is None:
            raise Forbidden(
                f"size {parsed.size_token!r} is not a preset; only presets are served "
                "(--presets-only)"
            )
        if parsed.size_token != parsed.preset:
            raise Forbidden(f"preset {parsed.size_token!r} is served only as {parsed.preset!r}")
        # A signature-shaped first segment: a valid signature, else the first name of the key.
        if parsed.signature is not None and not self._signed(parsed):
            return parsed.unsigned()
        return parsed

    def _signed(self, parsed: ParsedPath) -> bool:
        """Whether ``parsed``'s signature is valid under one of the secrets."""
        message = parsed.signed_path.encode()
        # Compare the encodings, not the decoded bytes: base64 decoding ignores the unused
        # low bits of the last character, so several strings would pass for one signature.
        given = (parsed.signature or "").encode()
        for key in self._keys:
            digest = hmac.new(key, message, hashlib.sha256).digest()
            if hmac.compare_digest(base64.urlsafe_b64encode(digest).rstrip(b"="), given):
                return True
        return False
