"""The comparison's workloads and the origin directory they share.

Every server reads the same temporary origin: ``src/`` holds the photos (hard links, or copies
across filesystems) and ``recipes/N/NAME`` are relative symlinks into ``src/`` — many virtual
keys over a few real photos (symlinks stay inside the root, which tofu's disk origin requires).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyvips

from bench.mix import DEFAULT_SIZE_MIX, in_turn, request_mix, sized_in_turn

JPEG_EXTENSIONS = (".jpg", ".jpeg")
BIG_MEGAPIXELS = 12.0
# What Chromium sends for an <img> (Chrome 120+); Safari and Firefox also name image/avif.
CHROMIUM_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
W3_TARGET_BYTES = 20_000


@dataclass(frozen=True)
class Photo:
    path: Path
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def find_photos(directory: Path) -> list[Photo]:
    """The JPEG photos directly or deeper under ``directory``, with their dimensions (header
    only), sorted by name."""
    photos = []
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() in JPEG_EXTENSIONS and path.is_file():
            try:
                header = pyvips.Image.new_from_file(str(path), access="sequential")
            except pyvips.Error:
                continue
            photos.append(Photo(path, header.width, header.height))
    return photos


def split_big(photos: Sequence[Photo], big_mp: float) -> tuple[list[Photo], list[Photo]]:
    """(ordinary, big) photos; big from ``big_mp`` megapixels."""
    big = [p for p in photos if p.megapixels >= big_mp]
    return [p for p in photos if p.megapixels < big_mp], big


@dataclass
class Origin:
    """The shared origin directory and the keys in it."""

    root: Path
    photo_keys: list[str]  # src/NAME for each ordinary photo
    big_keys: list[str]  # src/NAME for each big photo
    virtual_keys: list[str] = field(default_factory=list)  # recipes/N/NAME -> ordinary photos
    virtual_big_keys: list[str] = field(default_factory=list)  # big/N/NAME -> big photos


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _virtual(root: Path, folder: str, photos: Sequence[Photo], keys: dict, count: int) -> list[str]:
    out = []
    for n in range(count if photos else 0):
        photo = photos[n % len(photos)]
        target = root / folder / str(1000 + n) / photo.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path("../..") / keys[photo.path])
        out.append(target.relative_to(root).as_posix())
    return out


def prepare_origin(
    root: Path, ordinary: Sequence[Photo], big: Sequence[Photo], virtual: int, virtual_big: int = 64
) -> Origin:
    """Photos under ``root/src`` and ``virtual`` keys over the ordinary photos (each photo in
    turn), ``virtual_big`` over the big ones. Distinct keys keep concurrent requests from being
    coalesced into one render by tofu."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    keys: dict[Path, str] = {}
    for i, photo in enumerate([*ordinary, *big]):
        name = f"{i:02d}-{photo.path.name}"
        _link_or_copy(photo.path, src / name)
        keys[photo.path] = f"src/{name}"
    return Origin(
        root,
        [keys[p.path] for p in ordinary],
        [keys[p.path] for p in big],
        _virtual(root, "recipes", ordinary, keys, virtual),
        _virtual(root, "big", big, keys, virtual_big),
    )


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    servers: tuple[str, ...]  # which configurations it measures, in table order
    duration_s: float
    connections: int
    baseline: str  # the thumbor row ratios are computed against
    reference: str  # the ceiling row (for W3: nginx serving the bytes as a static file)
    cached: bool  # tofu keeps its result cache (else --cache-size 0)
    peer: str = ""  # a second server ratios are computed against
    accept: str = ""  # the Accept header of every request (and of the quality pass)
    # True: every URL names the quality (80 unless the token says otherwise), so every server
    # encodes JPEG alike; False: a token's own q only, else each format's default per server.
    explicit_quality: bool = True


MISS_SERVERS = ("tofu", "tofu-percore", "thumbor", "sharp", "nginx-if", "ceiling")
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "W1",
            "miss path: fit 512, JPEG q80, every request renders, each photo in turn",
            MISS_SERVERS,
            30.0,
            8,
            "thumbor",
            "ceiling",
            cached=False,
            peer="sharp",
        ),
        Workload(
            "W2",
            "realistic: Zipf popularity over the virtual keys x the app's size mix",
            (
                "tofu",
                "tofu-percore",
                "thumbor",
                "thumbor-rs",
                "sharp",
                "nginx-if",
                "nginx-if-cache",
                "ceiling",
            ),
            60.0,
            16,
            "thumbor",
            "ceiling",
            cached=True,
            peer="sharp",
        ),
        Workload(
            "W3",
            "hit path: one cached ~20 KB rendition",
            ("tofu", "tofu-percore", "thumbor-rs", "nginx-if-cache", "nginx-static"),
            20.0,
            32,
            "thumbor-rs",
            "nginx-static",
            cached=True,
        ),
        Workload(
            "W4",
            "big originals: fit 512, JPEG q80, every request renders",
            MISS_SERVERS,
            30.0,
            4,
            "thumbor",
            "ceiling",
            cached=False,
            peer="sharp",
        ),
        Workload(
            "W5",
            "browser: the W1 photos at the app's size mix, Chromium's Accept, every request "
            "renders (AVIF where negotiated)",
            ("tofu", "tofu-auto", "thumbor", "thumbor-webp", "sharp", "sharp-matched"),
            30.0,
            8,
            "thumbor",
            "sharp-matched",
            cached=False,
            peer="sharp",
            accept=CHROMIUM_ACCEPT,
            explicit_quality=False,
        ),
    )
}
ALL_SERVERS = (
    "tofu",
    "tofu-percore",
    "tofu-auto",
    "thumbor",
    "thumbor-rs",
    "thumbor-webp",
    "sharp",
    "sharp-matched",
    "nginx-if",
    "nginx-if-cache",
    "nginx-static",
    "ceiling",
)


def select(names: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """``names`` filtered by ``wanted``: an exact name, or a family (``tofu`` selects ``tofu``
    and ``tofu-percore``; ``nginx`` every nginx row)."""
    if not wanted:
        return list(names)
    return [n for n in names if any(n == w or n.startswith(w + "-") for w in wanted)]


def w3_token(data: bytes, target: int = W3_TARGET_BYTES) -> tuple[str, int]:
    """The cover-crop size token (3:2) whose tofu JPEG of ``data`` is nearest ``target`` bytes."""
    from tofu.render import RenderSettings, render
    from tofu.urls import parse_size

    best = ("280x194c", 0)
    for width in range(160, 1201, 40):
        token = f"{width}x{width * 2 // 3}c"
        size = len(render(data, parse_size(token, 4096), RenderSettings()).body)
        if abs(size - target) < abs(best[1] - target):
            best = (token, size)
        if size > target * 1.5:
            break
    return best


def pairs_for(
    workload: str,
    origin: Origin,
    *,
    list_length: int,
    sizes: Sequence[tuple[str, float]] = DEFAULT_SIZE_MIX,
    zipf_s: float = 1.0,
    seed: int = 1,
    w3_token_: str = "280x194c",
) -> list[tuple[str, str]]:
    """The (key, size token) sequence the load generator walks for ``workload``."""
    if workload == "W1":  # distinct keys, the photos in turn: nothing to coalesce or cache
        return in_turn(origin.virtual_keys, "512s")
    if workload == "W2":
        return request_mix(origin.virtual_keys, sizes, list_length, s=zipf_s, seed=seed)
    if workload == "W3":
        return [(origin.photo_keys[0], w3_token_)]
    if workload == "W4":
        return in_turn(origin.virtual_big_keys, "512s")
    if workload == "W5":  # distinct keys in turn, each at a size drawn from the mix
        return sized_in_turn(origin.virtual_keys, sizes, list_length, seed=seed)
    raise ValueError(f"unknown workload {workload!r}")


def quality_pairs(
    workload: str,
    origin: Origin,
    *,
    sizes: Sequence[tuple[str, float]] = DEFAULT_SIZE_MIX,
    w3_token_: str = "280x194c",
) -> list[tuple[str, str]]:
    """Every photo of ``workload`` once at each of its sizes, by its real key: what the quality
    pass fetches from each server."""
    if workload == "W1":
        return [(key, "512s") for key in origin.photo_keys]
    if workload in ("W2", "W5"):
        return [(key, token) for key in origin.photo_keys for token, _ in sizes]
    if workload == "W3":
        return [(origin.photo_keys[0], w3_token_)]
    if workload == "W4":
        return [(key, "512s") for key in origin.big_keys]
    raise ValueError(f"unknown workload {workload!r}")
