"""Reading a tofu node's ``/metrics`` (Prometheus text format) and the change over a run."""

from __future__ import annotations

import math
import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

_SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> Samples:
    """Every sample of a text exposition, keyed by (name, labels). Comments are skipped; a
    malformed line is ignored rather than failing a whole benchmark."""
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        labels = frozenset(
            (k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
            for k, v in _LABEL_RE.findall(match["labels"] or "")
        )
        try:
            value = float(match["value"])
        except ValueError:
            continue
        samples[(match["name"], labels)] = value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over samples whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def fetch(base_url: str, timeout: float = 5.0) -> Samples | None:
    """The node's samples, or None when it has no usable ``/metrics`` (not a tofu node)."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=timeout) as r:
            if r.status != 200:
                return None
            text = r.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    samples = parse_exposition(text)
    return samples if any(n.startswith("tofu_") for n, _ in samples) else None


@dataclass(frozen=True)
class CacheDelta:
    """What a tofu node did during a run, from its counters before and after."""

    hits: float
    misses: float
    renders: float
    origin_fetches: float
    requests: float

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else math.nan

    def to_dict(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hit_ratio,
            "renders": self.renders,
            "origin_fetches": self.origin_fetches,
            "requests": self.requests,
        }


def _counter(samples: Samples, name: str, **labels: str) -> float:
    # prometheus-client names counters ``X_total``; accept the bare name too.
    total = value(samples, name + "_total", **labels)
    return total if total else value(samples, name, **labels)


def cache_delta(before: Mapping, after: Mapping, cache: str = "result") -> CacheDelta:
    """The change in the node's result-cache counters (a restart shows as a negative delta;
    it is clamped to 0)."""

    def diff(name: str, **labels: str) -> float:
        return max(0.0, _counter(after, name, **labels) - _counter(before, name, **labels))  # type: ignore[arg-type]

    return CacheDelta(
        hits=diff("tofu_cache_hits", cache=cache),
        misses=diff("tofu_cache_misses", cache=cache),
        renders=diff("tofu_renders"),
        origin_fetches=diff("tofu_origin_fetches"),
        requests=diff("tofu_requests"),
    )
