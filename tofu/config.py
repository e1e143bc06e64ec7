"""All settings in one immutable object, built from command-line flags and ``TOFU_*`` variables.

``SETTINGS`` declares every option once (flag, type, default, help); the command line, the
environment and ``tofu config`` are all derived from it. Values are validated together so that a
bad start reports every problem, one line each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tofu.errors import BadRequest
from tofu.formats import FORMATS
from tofu.transform import ImageFormat, Size
from tofu.urls import parse_size


class ConfigError(Exception):
    """One or more settings are invalid; the message has one line per problem."""


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
}


def parse_bytes(text: str) -> int:
    """``"256MB"`` -> 268435456; plain integers are bytes."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match[2].lower() not in _BYTE_UNITS:
        raise ValueError(f"{text!r} is not a byte size (e.g. 256MB, 64k, 1048576)")
    return int(match[1]) * _BYTE_UNITS[match[2].lower()]


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[,\s]+", text) if part)


@dataclass(frozen=True)
class Setting:
    name: str  # the Config field; flag --name-with-dashes; env TOFU_NAME
    help: str
    parse: Callable[[str], Any] = str
    multiple: bool = False  # repeatable flag; comma/space separated in the environment
    flag_only: bool = False  # a boolean switch
    secret: bool = False  # masked by `tofu config`

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TOFU_" + self.name.upper()


def _origin(text: str) -> str:
    if not text:
        raise ValueError("must be a directory or s3://BUCKET[/PREFIX]")
    if text.startswith("s3://"):
        if not text[5:].split("/", 1)[0]:
            raise ValueError(f"{text!r} names no bucket")
    elif not os.path.isdir(text):
        raise ValueError(f"{text!r} is not a directory")
    return text


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError(f"must be greater than 0, got {text!r}")
        return value

    return parse


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise ValueError(f"must be 0 or more, got {text!r}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _format(text: str) -> ImageFormat | None:
    if text.lower() == "none":
        return None
    if text.lower() == ImageFormat.GIF.value:
        # 256 colours make poor stills; animations get GIF anyway when WebP is not accepted.
        raise ValueError("gif is never negotiated for stills; animations fall back to it")
    try:
        return ImageFormat(text.lower())
    except ValueError:
        raise ValueError(
            f"{text!r} is not one of {', '.join(f.value for f in FORMATS)}, none"
        ) from None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


SETTINGS: tuple[Setting, ...] = (
    Setting("origin", "originals: a directory, or s3://BUCKET[/PREFIX]", _origin),
    Setting("host", "address to listen on"),
    Setting("port", "port to listen on", _non_negative(int)),
    Setting("s3_endpoint_url", "S3 endpoint for MinIO, SeaweedFS, Ceph (default: AWS)"),
    Setting(
        "secret",
        "URL signing secret; repeat for rotation (all are accepted, the first signs)",
        multiple=True,
        secret=True,
    ),
    Setting(
        "sizes",
        "allowlist of size tokens served without a signature, e.g. 280,280x194c",
        multiple=True,
    ),
    Setting(
        "dev",
        "development mode: allow starting with neither secret nor sizes (all URLs open)",
        flag_only=True,
    ),
    Setting(
        "workers",
        "worker processes sharing the port (default: the number of cores)",
        _positive(int),
    ),
    Setting(
        "max_renders",
        "renders at once per worker, one thread each; more wait in the queue (default: the "
        "number of cores, so that any worker can use every core while the others idle)",
        _positive(int),
    ),
    Setting(
        "vips_concurrency",
        "libvips threads within one render; renders run side by side, so 1 is the cheapest",
        _positive(int),
    ),
    Setting(
        "render_memory",
        "decoding memory the renders of this node (all workers) may hold at once (e.g. 256MB); "
        "a render waits for room, and one larger than all of it runs alone",
        _positive(parse_bytes),
    ),
    Setting(
        "exact_shrink",
        "decode JPEGs at twice the output size at least, as libvips thumbnail does (resize "
        "SSIM >= 0.98 instead of >= 0.97, about 15%% more CPU per render)",
        flag_only=True,
    ),
    Setting(
        "max_queue",
        "misses allowed beyond the render slots (fetching or waiting); beyond: 503",
        _non_negative(int),
    ),
    Setting(
        "request_timeout", "deadline in seconds for fetch + render of one request", _positive(float)
    ),
    Setting(
        "fetch_timeout",
        "deadline in seconds for one origin fetch, retries included",
        _positive(float),
    ),
    Setting(
        "fetch_retries",
        "retries after a failed origin fetch (throttling, 5xx, resets)",
        _non_negative(int),
    ),
    Setting("max_output_side", "largest output width or height in pixels", _positive(int)),
    Setting("max_source_pixels", "largest source image in pixels (width x height)", _positive(int)),
    Setting("max_source_bytes", "largest original in bytes (e.g. 32MB)", _positive(parse_bytes)),
    Setting(
        "max_frames",
        "most frames an animation may have to stay animated; more: its first frame, as a still",
        _positive(int),
    ),
    Setting(
        "max_animation_pixels",
        "most pixels over all frames (width x height x frames) an animation may have to stay "
        "animated; more: its first frame, as a still",
        _positive(int),
    ),
    Setting(
        "cache_size",
        "bytes of rendered images kept in memory; 0 turns the cache off",
        _non_negative(parse_bytes),
    ),
    Setting(
        "originals_cache_size",
        "bytes of originals kept in memory; 0 turns it off",
        _non_negative(parse_bytes),
    ),
    Setting(
        "cache_item_max", "largest share of a cache one entry may take (0-1)", _positive(float)
    ),
    Setting("not_found_ttl", "seconds a missing original is remembered", _non_negative(float)),
    Setting("max_age", "Cache-Control max-age in seconds for images", _non_negative(int)),
    Setting(
        "negotiate",
        "formats chosen by the Accept header when the URL names none, in "
        "order of preference ('none': never negotiate)",
        _format,
        multiple=True,
    ),
    Setting("avif_effort", "AVIF encoder effort 0 (fastest) to 9", _non_negative(int)),
    Setting(
        "client_hints",
        "answer Accept-CH and size images by the Sec-CH-DPR hint (URLs without @DPR) and the "
        "Sec-CH-Width hint (sizes with the w option), with Vary",
        flag_only=True,
    ),
    Setting(
        "save_data",
        "lower default quality for clients that send Save-Data: on ("
        + ", ".join(
            f"{s.label} {s.save_data_quality}" for s in FORMATS.values() if s.save_data_quality
        )
        + "), with Vary: Save-Data",
        flag_only=True,
    ),
    Setting(
        "drain_seconds",
        "after SIGTERM: seconds /readyz reports 503 while still serving",
        _non_negative(float),
    ),
    Setting(
        "shutdown_timeout",
        "after draining: seconds in-flight requests get to finish",
        _non_negative(float),
    ),
    Setting("log_format", "access log format", _choice("text", "json")),
    Setting("log_level", "log level", _choice("debug", "info", "warning", "error")),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    """The effective settings of one tofu server. Build with ``Config.load``."""

    origin: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    s3_endpoint_url: str | None = None
    secret: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    dev: bool = False
    workers: int = field(default_factory=_cores)
    max_renders: int = field(default_factory=_cores)
    vips_concurrency: int = 1
    render_memory: int = 256 << 20
    exact_shrink: bool = False
    max_queue: int = 64
    request_timeout: float = 30.0
    fetch_timeout: float = 10.0
    fetch_retries: int = 2
    max_output_side: int = 4096
    max_source_pixels: int = 50_000_000
    max_source_bytes: int = 32 << 20
    max_frames: int = 500
    max_animation_pixels: int = 50_000_000
    cache_size: int = 256 << 20
    originals_cache_size: int = 64 << 20
    cache_item_max: float = 0.1
    not_found_ttl: float = 10.0
    max_age: int = 31_536_000
    negotiate: tuple[ImageFormat, ...] = (ImageFormat.AVIF, ImageFormat.WEBP)
    avif_effort: int = 0
    client_hints: bool = False
    save_data: bool = False
    drain_seconds: float = 5.0
    shutdown_timeout: float = 10.0
    log_format: str = "text"
    log_level: str = "info"

    @property
    def allowed_sizes(self) -> frozenset[Size]:
        return frozenset(parse_size(token, self.max_output_side) for token in self.sizes)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
        """Flags (raw strings, lists of strings or True) win over ``TOFU_*`` variables, which
        win over defaults. Raises ``ConfigError`` listing every bad value."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        errors: list[str] = []
        invalid: set[str] = set()  # given but not valid: already reported, once
        for setting in SETTINGS:
            raw = flags.get(setting.name)
            source = setting.flag
            if raw is None or raw == [] or raw is False:
                raw = environ.get(setting.env)
                source = setting.env
                if raw is None or raw == "":
                    continue
                if setting.flag_only:
                    raw = raw.lower() in ("1", "true", "yes", "on")
                elif setting.multiple:
                    raw = _split(raw)
            try:
                if setting.flag_only:
                    values[setting.name] = bool(raw)
                elif setting.multiple:
                    items = [p for item in raw for p in _split(item)]
                    parsed = (setting.parse(p) for p in items)
                    values[setting.name] = tuple(v for v in parsed if v is not None)
                else:
                    values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                errors.append(f"{source}: {exc}")
                invalid.add(setting.name)
        config = cls(**values)
        errors.extend(config._problems(set(values) | invalid))
        if errors:
            raise ConfigError("\n".join(errors))
        return config

    def _problems(self, given: set[str]) -> list[str]:
        problems = []
        if not self.origin and "origin" not in given:
            problems.append("--origin is required (a directory or s3://BUCKET[/PREFIX])")
        if not self.secret and not self.sizes and not self.dev:
            problems.append(
                "refusing to serve every size unsigned: give --secret KEY (signed URLs) or "
                "--sizes LIST (an allowlist), or --dev for local development"
            )
        for token in self.sizes:
            try:
                parse_size(token, self.max_output_side)
            except BadRequest as exc:
                problems.append(f"--sizes: {exc.reason}")
        if not 0 <= self.port <= 65535:
            problems.append("--port must be 0-65535")
        if not 0 < self.cache_item_max <= 1:
            problems.append("--cache-item-max must be within (0, 1]")
        if self.avif_effort > 9:
            problems.append("--avif-effort must be 0-9")
        if self.s3_endpoint_url and not self.origin.startswith("s3://"):
            problems.append("--s3-endpoint-url needs an s3:// origin")
        return problems

    def describe(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets masked (for ``tofu config``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if _BY_NAME[f.name].secret and value:
                value = ["*" * 8 for _ in value]
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, ImageFormat) else v for v in value]
            out[f.name] = value
        return out
