"""The request mix: which originals, at which sizes, in which order.

Popularity of originals follows a Zipf law (the key of rank r is requested with probability
proportional to 1 / r**s); sizes follow an app's mix of size tokens with weights. The whole
sequence is computed here, deterministically from a seed, and the load generator only walks it.
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tofu.signing import signed_path
from tofu.urls import build_path

# A recipe app's renditions: list thumbnails, cards, the recipe page, step photos, the social
# card; retina screens ask for @2x. Weights are shares of requests and sum to 1.
DEFAULT_SIZE_MIX: tuple[tuple[str, float], ...] = (
    ("280", 0.15),
    ("280@2x", 0.15),
    ("280x194c", 0.15),
    ("280x194c@2x", 0.15),
    ("650s", 0.08),
    ("650s@2x", 0.07),
    ("750x500cq60", 0.10),
    ("750x500cq60@2x", 0.05),
    ("1200x630c", 0.10),
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".avif", ".heic", ".gif")


def format_size_mix(mix: Sequence[tuple[str, float]]) -> str:
    return ",".join(f"{token}:{weight:g}" for token, weight in mix)


def parse_size_mix(text: str) -> list[tuple[str, float]]:
    """``"280:3,650s:1"`` -> ``[("280", 0.75), ("650s", 0.25)]``; a token without a weight
    weighs 1. Weights are normalised to sum to 1."""
    items: list[tuple[str, float]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        token, sep, weight = part.rpartition(":")
        if not sep:
            token, weight = part, "1"
        value = float(weight)
        if value < 0 or not token:
            raise ValueError(f"{part!r}: expected TOKEN[:WEIGHT] with a weight >= 0")
        items.append((token, value))
    total = sum(w for _, w in items)
    if not items or total <= 0:
        raise ValueError(f"size mix {text!r} has no token with a positive weight")
    return [(token, w / total) for token, w in items]


def zipf_weights(n: int, s: float) -> list[float]:
    """Probabilities of ranks 1..n under Zipf(s); they sum to 1."""
    if n < 1:
        raise ValueError("need at least one key")
    raw = [1.0 / (rank**s) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


@dataclass(frozen=True)
class ZipfSampler:
    """Draws ranks 0..n-1 (0 the most popular) with Zipf(s) probabilities."""

    n: int
    s: float = 1.0

    def sample(self, count: int, rng: random.Random) -> list[int]:
        cumulative = list(itertools.accumulate(zipf_weights(self.n, self.s)))
        cumulative[-1] = 1.0  # no rounding gap at the top
        return [bisect.bisect_left(cumulative, rng.random()) for _ in range(count)]


def keys_from_dir(root: str | os.PathLike[str]) -> list[str]:
    """Every image under ``root`` as an origin key (relative path with ``/``), sorted."""
    base = Path(root)
    keys = [
        p.relative_to(base).as_posix()
        for p in base.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    if not keys:
        raise ValueError(f"no images (*{', *'.join(IMAGE_EXTENSIONS)}) under {root}")
    return sorted(keys)


def request_mix(
    keys: Sequence[str],
    sizes: Sequence[tuple[str, float]],
    count: int,
    *,
    s: float = 1.0,
    seed: int = 1,
) -> list[tuple[str, str]]:
    """``count`` (key, size token) pairs. Popularity ranks are given to the keys in a shuffled
    order (so the most popular key is not simply the first by name); all from ``seed``."""
    rng = random.Random(seed)
    ranked = list(keys)
    rng.shuffle(ranked)
    ranks = ZipfSampler(len(ranked), s).sample(count, rng)
    tokens = [token for token, _ in sizes]
    cumulative = list(itertools.accumulate(w for _, w in sizes))
    chosen = rng.choices(tokens, cum_weights=cumulative, k=count)
    return [(ranked[r], token) for r, token in zip(ranks, chosen, strict=True)]


def in_turn(keys: Sequence[str], token: str, count: int | None = None) -> list[tuple[str, str]]:
    """Every key in turn at one size (the miss-path workload): ``count`` pairs, cycling."""
    count = len(keys) if count is None else count
    return [(keys[i % len(keys)], token) for i in range(count)]


def sized_in_turn(
    keys: Sequence[str], sizes: Sequence[tuple[str, float]], count: int, *, seed: int = 1
) -> list[tuple[str, str]]:
    """Every key in turn (nothing repeats within ``len(keys)`` requests, so nothing is
    coalesced), each at a size token drawn from the weighted mix; ``count`` pairs."""
    rng = random.Random(seed)
    tokens = [token for token, _ in sizes]
    cumulative = list(itertools.accumulate(w for _, w in sizes))
    chosen = rng.choices(tokens, cum_weights=cumulative, k=count)
    return [(keys[i % len(keys)], token) for i, token in enumerate(chosen)]


def tofu_paths(pairs: Iterable[tuple[str, str]], secret: str | None = None) -> list[str]:
    """tofu URL paths for (key, token) pairs, signed when ``secret`` is given."""
    paths = (build_path(key, token) for key, token in pairs)
    if secret:
        return [signed_path(p, secret) for p in paths]
    return list(paths)


def popularity_summary(pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Shares of requests the most popular keys get and distinct renditions, for the log."""
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.values(), reverse=True)
    total = max(1, len(pairs))
    return {
        "keys": len(counts),
        "renditions": len(set(pairs)),
        "top1_share": ordered[0] / total if ordered else 0.0,
        "top10_share": sum(ordered[:10]) / total,
    }
