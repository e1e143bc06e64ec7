"""The original's key at the origin: one type, validated where a URL is parsed, trusted after.

A ``Key`` is ``/``-separated names: none empty, none ``.`` or ``..``, no backslash, no NUL. So
it cannot climb out of a directory, a URL's base or a bucket prefix, whichever origin serves
it. Both URL grammars build their ``Transform``'s key with ``parse_key`` (a 400 with the reason
otherwise); origins keep a last check before the key becomes a path or URL, through
``origin_key``, the same rule (a 404 there: what lies outside an origin is nobody's business).
"""

from __future__ import annotations

from tofu.errors import BadRequest, NotFound


def key_problem(text: str) -> str | None:
    """Why ``text`` is not a key, or ``None`` when it is one."""
    if any(segment in ("", ".", "..") for segment in text.split("/")):
        return "key has an empty or dot segment"
    if "\\" in text or "\x00" in text:
        return "key has a backslash or a NUL character"
    return None


class Key(str):
    """A string known to be a key (``key_problem`` found nothing): constructing one checks it
    and raises ``ValueError`` otherwise, so a ``Key`` is valid wherever it travels (the peer
    protocol decodes keys through this constructor too)."""

    __slots__ = ()

    def __new__(cls, text: str) -> Key:
        problem = key_problem(text)
        if problem is not None:
            raise ValueError(problem)
        return super().__new__(cls, text)


def parse_key(text: str) -> Key:
    """``text`` as a key; ``BadRequest`` with the reason (and the key) otherwise."""
    try:
        return Key(text)
    except ValueError as exc:
        raise BadRequest(f"{exc}: {text!r}") from None


def origin_key(key: str) -> Key:
    """``key`` checked once more where it becomes a path or URL (defence in depth: a cheap
    split, whoever built the key); ``NotFound`` otherwise."""
    try:
        return Key(key)
    except ValueError:
        raise NotFound(f"no original at {key!r}") from None
