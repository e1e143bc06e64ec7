"""Parsing and formatting of durations, byte counts and rates for the bench command lines."""

from __future__ import annotations

import re

_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "ms": 0.001}


# Measured runs shorter than this per server are dominated by warm-up, scheduling on a shared
# machine and the requests in flight when wrk stops: fine to see that everything answers, too
# noisy to rank servers by. (W3's default is 20 s: the hit path completes ~10^5 requests a
# second's run, so its default is exempt; shortening it is not.)
RANKING_MIN_SECONDS = 30.0


def short_run_warning(seconds: float, default_seconds: float) -> str | None:
    """The warning a run of ``seconds`` per server gets when it is shorter than 30 s and than
    its workload's default (``default_seconds``), or None."""
    if seconds >= min(RANKING_MIN_SECONDS, default_seconds):
        return None
    return (
        f"{seconds:g} s per server (default {default_seconds:g} s) is too short to rank servers: "
        f"runs under {RANKING_MIN_SECONDS:g} s are too noisy; this one shows that everything "
        "answers"
    )


def parse_duration(text: str) -> float:
    """``"30s"`` -> 30.0, ``"2m"`` -> 120.0, ``"1h"``, ``"500ms"``; a bare number is seconds."""
    seconds = parse_duration_or_zero(text)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be greater than 0")
    return seconds


def parse_duration_or_zero(text: str) -> float:
    """As ``parse_duration``, and ``0`` (e.g. no warm-up) is allowed."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 2m, 1h, 500ms)")
    return float(match[1]) * _DURATION_UNITS[match[2]]


def parse_per_workload(text: str, parse: type | object = str) -> dict[str, object]:
    """``"W1=20s,W3=10s"`` -> ``{"W1": parse("20s"), "W3": parse("10s")}``."""
    out: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{part!r}: expected NAME=VALUE")
        out[name.strip().upper()] = parse(value.strip())  # type: ignore[operator]
    return out


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # unreachable


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"
