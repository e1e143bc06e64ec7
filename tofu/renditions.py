"""The canonical encoding of a rendition (``Transform`` + negotiated format): equal renditions
give equal bytes, in every process and run. Sibling workers send it to each other (``tofu.peers``)
and the result tiers derive their keys from it (``tofu.results``).
"""

from __future__ import annotations

import enum
import functools
import json
import math
import operator
import types
import typing
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from tofu.negotiate import Negotiated
from tofu.transform import Transform

Rendition = tuple[Transform, Negotiated | None]


# --- the wire form of a rendition ----------------------------------------------------------


def encode_rendition(transform: Transform, negotiated: Negotiated | None) -> bytes:
    """The canonical encoding: equal renditions give equal bytes (sorted keys, no spaces)."""
    document = {"transform": _encode_transform(transform), "negotiated": _encode_format(negotiated)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode_rendition(data: bytes) -> Rendition:
    """The rendition ``encode_rendition`` encoded; ``ValueError`` for anything else (unknown or
    missing fields, wrong types, duplicate keys, NaN)."""
    try:
        document = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    _expect_keys(document, {"transform", "negotiated"})
    return _decode_transform(document["transform"]), _decode_format(document["negotiated"])


# A codec per type hint, built once from the dataclasses' field types, so that a field added to
# Transform or Size needs no code here as long as its type is among these: str, int, bool,
# float, a str subclass that validates (tofu.keys.Key), an Enum, a tuple of those, a frozen
# dataclass, or an optional/union of them.
_Encode = Callable[[Any], Any]
_Decode = Callable[[Any], Any]


@functools.cache
def _codec(hint: Any) -> tuple[_Encode, _Decode]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _union_codec(hint)
    if isinstance(hint, type) and is_dataclass(hint):
        return _dataclass_codec(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_codec(hint)
    if typing.get_origin(hint) is tuple:
        return _tuple_codec(hint)
    if hint in (str, int, bool):
        return _identity, functools.partial(_exact, hint)
    if isinstance(hint, type) and issubclass(hint, str):
        # Its constructor validates (ValueError): a sibling's key is checked like a URL's.
        return str, lambda data: hint(_exact(str, data))
    if hint is float:
        return _identity, _finite_float
    raise TypeError(f"cannot encode a field of type {hint!r} for a peer")


def _union_codec(hint: Any) -> tuple[_Encode, _Decode]:
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(arms) < len(typing.get_args(hint))
    codecs = [(typing.get_origin(a) or a, *_codec(a)) for a in arms]

    def encode(value: Any) -> Any:
        if value is None:
            return None
        return next(enc for kind, enc, _ in codecs if isinstance(value, kind))(value)

    def decode(data: Any) -> Any:
        if data is None and optional:
            return None
        for _, _, dec in codecs:
            try:
                return dec(data)
            except ValueError:
                continue
        raise ValueError(f"{data!r} is none of {hint!r}")

    return encode, decode


def _dataclass_codec(cls: type) -> tuple[_Encode, _Decode]:
    hints = typing.get_type_hints(cls)
    # Fields a constructor takes; derived ones (a cached hash) are recomputed on arrival.
    wire = [(f.name, *_codec(hints[f.name])) for f in fields(cls) if f.init]
    names = {name for name, _, _ in wire}

    def encode(value: Any) -> Any:
        return {name: enc(getattr(value, name)) for name, enc, _ in wire}

    def decode(data: Any) -> Any:
        _expect_keys(data, names)
        values = {name: dec(data[name]) for name, _, dec in wire}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid {cls.__name__}: {exc}") from None

    return encode, decode


def _enum_codec(cls: type[enum.Enum]) -> tuple[_Encode, _Decode]:
    def decode(data: Any) -> Any:
        try:
            return cls(data)
        except ValueError:
            raise ValueError(f"{data!r} is not a {cls.__name__}") from None

    return operator.attrgetter("value"), decode


def _tuple_codec(hint: Any) -> tuple[_Encode, _Decode]:
    args = typing.get_args(hint)
    variadic = len(args) == 2 and args[1] is Ellipsis
    codecs = [_codec(args[0])] if variadic else [_codec(a) for a in args]

    def per_item(length: int) -> list[tuple[_Encode, _Decode]]:
        return codecs * length if variadic else codecs

    def encode(value: Any) -> Any:
        return [enc(v) for (enc, _), v in zip(per_item(len(value)), value, strict=True)]

    def decode(data: Any) -> Any:
        if not isinstance(data, list) or (not variadic and len(data) != len(codecs)):
            raise ValueError(f"expected a list of {len(codecs)} items, got {data!r}")
        return tuple(dec(d) for (_, dec), d in zip(per_item(len(data)), data, strict=True))

    return encode, decode


def _identity(value: Any) -> Any:
    return value


def _exact(kind: type, data: Any) -> Any:
    # Exact types: JSON's true is no int, 1 is no str.
    if type(data) is not kind:
        raise ValueError(f"expected {kind.__name__}, got {data!r}")
    return data


def _finite_float(data: Any) -> float:
    if type(data) not in (int, float) or not math.isfinite(data):
        raise ValueError(f"expected a number, got {data!r}")
    return float(data)


_encode_transform, _decode_transform = _codec(Transform)
_encode_format, _decode_format = _codec(Negotiated | None)


def _expect_keys(data: Any, keys: set[str]) -> None:
    if not isinstance(data, dict) or set(data) != keys:
        raise ValueError(f"expected an object with exactly {sorted(keys)}, got {data!r}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key")
    return document


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
