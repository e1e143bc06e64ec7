"""All settings in one immutable object, built from command-line flags and ``TOFU_*`` variables.

``SETTINGS`` declares every option once (flag, type, default, help); the command line, the
environment and ``tofu config`` are all derived from it. Values are validated together so that a
bad start reports every problem, one line each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tofu.errors import BadRequest
from tofu.formats import AUTO_QUALITY_TARGET, FORMATS
from tofu.origins.sources import Route, parse_route, parse_source, parse_table
from tofu.transform import DEFAULT_WATERMARK_PLACEMENT, ImageFormat, Watermark
from tofu.urls import Preset, SizeSpec, parse_preset, parse_size_spec


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


def _words(text: str) -> tuple[str, ...]:
    """A list of words separated by commas and/or whitespace: ``280,280x194c 650s``."""
    return tuple(part for part in re.split(r"[,\s]+", text) if part)


def _lines(text: str) -> tuple[str, ...]:
    """A list of lines, each item byte for byte but for its line end (LF or CRLF); blank lines
    (empty or only whitespace) are ignored. For values that may hold commas and spaces."""
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return tuple(line for line in lines if line.strip())


# HMAC-SHA256 keys shorter than this are guessable from one signed URL (the probe recovered a
# one-character key in under a millisecond); 32 bytes is the hash's own strength.
MIN_SECRET_BYTES = 32


# What `tofu serve --help` and docs/settings.md group the settings under, in this order.
GROUPS: dict[str, str] = {
    "listening": "where and how the server listens, its processes and how it stops",
    "origins": "where originals come from and how they are fetched",
    "security": "which URLs are served: signatures, allowlists, thumbor keys",
    "rendering": "named sizes, output formats and qualities, how images are resized",
    "caches": "rendered images and originals kept in memory, on disk, in a shared store",
    "limits": "bounds on the work and memory one request or one node may take",
    "observability": "logs",
}

# Units a setting's value is in, so defaults read as people write them (256MB, 30 s).
UNITS = ("", "bytes", "s", "ms", "%", "pixels")
_METAVARS = {"bytes": "SIZE", "s": "SECONDS", "ms": "MS", "%": "PERCENT", "pixels": "PIXELS"}


@dataclass(frozen=True)
class Setting:
    name: str  # the Config field; flag --name-with-dashes; env TOFU_NAME
    help: str  # plain text (no argparse %-escapes)
    parse: Callable[[str], Any] = str
    multiple: bool = False  # a list: the flag repeats, the TOFU_* value is split by `split`
    flag_only: bool = False  # a boolean switch
    secret: bool = False  # masked by `tofu config`
    split: Callable[[str], tuple[str, ...]] = _words  # the list syntax of the TOFU_* value
    split_flag: bool = True  # each flag value is split the same way; False: one value, one item
    group: str = field(kw_only=True)  # a key of GROUPS
    unit: str = field(default="", kw_only=True)  # one of UNITS
    choices: tuple[str, ...] = field(default=(), kw_only=True)  # the values `parse` accepts
    default_text: str = field(default="", kw_only=True)  # a default computed at start

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TOFU_" + self.name.upper()

    @property
    def metavar(self) -> str:
        """What the flag's value is called in help: its choices, its unit, or its name."""
        if self.choices:
            return "{" + ",".join(self.choices) + "}"
        if self.multiple:
            return "VALUE"
        return _METAVARS.get(self.unit, self.name.upper())

    @property
    def default(self) -> str:
        """The default as a person would write it (``256MB``, ``30 s``, ``avif, webp``), or
        ``""`` when there is none (unset, off, empty)."""
        if self.default_text:
            return self.default_text
        value = getattr(Config, self.name)
        if value is None and self.name == "hedge_after":
            return "auto"
        if value is None or value is False or value == "" or value == ():
            return ""
        if isinstance(value, tuple):
            return ", ".join(str(getattr(item, "value", item)) for item in value)
        return format_value(value, self.unit)


def format_bytes(size: int) -> str:
    """``268435456`` -> ``"256MB"``: the largest unit that divides it (``parse_bytes`` reads
    it back)."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def format_value(value: Any, unit: str) -> str:
    """A setting's value in its unit, for people."""
    if unit == "bytes":
        return format_bytes(int(value))
    if unit == "pixels":
        return f"{value:,} pixels" + (f" ({value / 1e6:g} MP)" if value >= 1_000_000 else "")
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if unit == "%":
        return f"{text}%"
    if unit == "s" and value >= 86_400 and value % 86_400 == 0:
        return f"{text} s ({value // 86_400:g} days)"
    return f"{text} {unit}" if unit else text


def _secrets(name: str, help: str, *, group: str) -> Setting:
    """A list of secrets: one flag value is one secret, byte for byte (never split on spaces
    or commas); the variable holds one per line; masked by ``tofu config``."""
    return Setting(
        name,
        help,
        _secret,
        multiple=True,
        secret=True,
        split=_lines,
        split_flag=False,
        group=group,
    )


def _origin(text: str) -> str:
    if not text:
        raise ValueError(
            "must be [PREFIX/=]SOURCE: a directory, s3://BUCKET[/PREFIX] or http(s)://"
        )
    parse_route(text)  # each backend validates its own sources
    return text


def _watermark(text: str) -> str:
    # Imported here: the front ends' package imports this module.
    from tofu.frontends.thumbor import watermark_setting

    watermark_setting(text)  # validated here, parsed again where it is used
    return text


def _origins(text: str) -> tuple[str, ...]:
    """``TOFU_ORIGIN``: origins separated by newlines or ``;`` (no source holds either)."""
    return tuple(part.strip() for part in re.split(r"[;\n]", text) if part.strip())


def _result_store(text: str) -> str:
    from tofu.results import STORES

    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in STORES:
        raise ValueError(f"{text!r} is not s3://BUCKET[/PREFIX][?endpoint_url=URL&region=NAME]")
    parse_source(text)  # the store's backend reads its URL as the origin's does
    return text


def _hedge_after(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    value = float(text)
    if not 0 <= value < 1e6:
        raise ValueError(f"must be auto or 0 or more milliseconds, got {text!r}")
    return value


def _percent(text: str) -> float:
    value = float(text.strip().removesuffix("%"))
    if not 0 <= value <= 100:
        raise ValueError(f"must be 0-100, got {text!r}")
    return value


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


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# What --negotiate accepts: every still format but GIF (see _format), or none.
NEGOTIABLE = (*(f.value for f in FORMATS if f is not ImageFormat.GIF), "none")


def _quality_target(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise ValueError(f"must be an SSIM from 0.5 to below 1, got {text!r}")
    return value


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
        fmt = ImageFormat(text.lower())
    except ValueError:
        raise ValueError(
            f"{text!r} is not one of {', '.join(f.value for f in FORMATS)}, none"
        ) from None
    return fmt


def _secret(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("a secret is not valid UTF-8") from None
    return text


def split_host_port(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port); ``":PORT"`` is every interface (host ``""``), an IPv6
    host goes in brackets (``[::1]:9090``)."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):([0-9]{1,5})", text)
    if not match:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9090, :9090, [::1]:9090)")
    port = int(match[2])
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return match[1].strip("[]"), port


def _host_port(text: str) -> str:
    split_host_port(text)
    return text


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Measured on 2 cores (docs/rendering.md, Processes and threads): one worker rendering cores + 1
# at once spent 7 % less CPU per miss than a worker per core (no oversubscription, no routing
# between workers) for half the memory, and the extra slot covers the gaps while a render's original
# is fetched and planned. More workers on larger machines so that one event loop and GIL do
# not feed too many cores; four cores each is an estimate (only 2 cores could be measured).
CORES_PER_WORKER = 4


def default_workers() -> int:
    return max(1, _cores() // CORES_PER_WORKER)


def default_max_renders() -> int:
    return _cores() + 1


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "origin",
        "originals: [PREFIX/=]SOURCE[|REPLICA...], a SOURCE being a directory, "
        "s3://BUCKET[/PREFIX][?endpoint_url=URL&region=NAME] or http(s)://HOST[:PORT]/BASE/; "
        "repeat for several origins, chosen by the key's longest PREFIX (one without is the "
        "default). The variable separates them with ; or newlines",
        _origin,
        multiple=True,
        split=_origins,
        split_flag=False,
        group="origins",
    ),
    Setting("host", "address to listen on", group="listening"),
    Setting("port", "port to listen on", _non_negative(int), group="listening"),
    Setting(
        "ops_listen",
        "HOST:PORT (or :PORT, every interface) to serve /metrics, /healthz and /readyz on; "
        "/metrics is then not served on the public port (404). With several workers, the "
        "first worker serves it (its /metrics covers all workers)",
        _host_port,
        group="listening",
    ),
    Setting(
        "s3_endpoint_url", "S3 endpoint for MinIO, SeaweedFS, Ceph (default: AWS)", group="origins"
    ),
    _secrets(
        "secret",
        "URL signing secret, at least 32 bytes, taken byte for byte; repeat the flag for "
        "rotation (all are accepted, the first signs). The variable holds one per line",
        group="security",
    ),
    Setting(
        "secret_file",
        "file of signing secrets, one per line (blank lines ignored), added after the --secret "
        "ones: keeps them out of ps output. The variable holds one path per line",
        multiple=True,
        split=_lines,
        split_flag=False,
        group="security",
    ),
    Setting(
        "sizes",
        "allowlist of size tokens served without a signature, e.g. 280,280x194c",
        multiple=True,
        group="security",
    ),
    Setting(
        "preset",
        "a named size, NAME=SIZE (e.g. card=280x194c, hero=1200x630cq70): URLs may name it "
        "where a size token goes, for the same rendition as the token; repeat for several. "
        "The variable holds one per line",
        multiple=True,
        split=_lines,
        split_flag=False,
        group="rendering",
    ),
    Setting(
        "presets_only",
        "serve tofu URLs only at a preset's size, signed or not; preset URLs need no "
        "signature (thumbor URLs are unaffected)",
        flag_only=True,
        group="security",
    ),
    Setting(
        "dev",
        "development mode: with no key and no allowlist configured, every URL of both "
        "grammars is served unsigned; keys shorter than 32 bytes are accepted",
        flag_only=True,
        group="security",
    ),
    _secrets(
        "thumbor_key",
        "thumbor SECURITY_KEY: serve thumbor URLs signed with it, taken byte for byte; repeat "
        "the flag for rotation. The variable holds one per line",
        group="security",
    ),
    Setting(
        "thumbor_weak_key",
        "accept --thumbor-key values under 32 bytes: an existing thumbor SECURITY_KEY that "
        "cannot change without re-signing every URL in its apps (a warning at every start)",
        flag_only=True,
        group="security",
    ),
    Setting(
        "thumbor_unsafe",
        "serve thumbor's unsigned /unsafe/ URLs (ALLOW_UNSAFE_URL; also with --dev when no "
        "key or allowlist is configured)",
        flag_only=True,
        group="security",
    ),
    Setting(
        "thumbor_lenient",
        "ignore thumbor filters tofu does not render (frame) or thumbor does not have, as "
        "thumbor ignores unknown filters; without it they are a 400 that names them",
        flag_only=True,
        group="security",
    ),
    Setting(
        "watermark",
        "PREFIX=KEY[,x,y,alpha[,w_ratio,h_ratio]]: composite the image at KEY (from the "
        "origins) over every rendition whose key starts with PREFIX (empty: every key; the "
        "longest matching prefix wins), placed as thumbor's watermark filter places it "
        f"(default {DEFAULT_WATERMARK_PLACEMENT}: bottom right, 10 px in); on top of any the "
        "URL asks for. Repeat for several prefixes; the variable holds one per line",
        _watermark,
        multiple=True,
        split=_lines,
        split_flag=False,
        group="rendering",
    ),
    Setting(
        "workers",
        "worker processes sharing the port",
        _positive(int),
        group="listening",
        default_text="one per 4 cores, at least 1",
    ),
    Setting(
        "max_renders",
        "renders at once on the node, all workers together, one thread each; more wait in the "
        "queue (cores + 1 by default: a render's fetch and planning would leave a core idle "
        "otherwise)",
        _positive(int),
        group="limits",
        default_text="the number of cores + 1",
    ),
    Setting(
        "vips_concurrency",
        "libvips threads within one render; renders run side by side, so 1 is the cheapest",
        _positive(int),
        group="rendering",
    ),
    Setting(
        "render_memory",
        "decoding memory the renders of this node (all workers) may hold at once (e.g. 256MB); "
        "a render waits for room, and one larger than all of it runs alone",
        _positive(parse_bytes),
        group="limits",
        unit="bytes",
    ),
    Setting(
        "exact_shrink",
        "decode JPEGs at twice the output size at least, as libvips thumbnail does (resize "
        "SSIM >= 0.98 instead of >= 0.97, about 37% more CPU per render)",
        flag_only=True,
        group="rendering",
    ),
    Setting(
        "max_queue",
        "misses allowed beyond the render slots (fetching or waiting); beyond: 503",
        _non_negative(int),
        group="limits",
    ),
    Setting(
        "request_timeout",
        "deadline in seconds for fetch + render of one request",
        _positive(float),
        group="limits",
        unit="s",
    ),
    Setting(
        "fetch_timeout",
        "deadline in seconds for one origin fetch, retries included",
        _positive(float),
        group="origins",
        unit="s",
    ),
    Setting(
        "fetch_retries",
        "retries after a failed origin fetch (throttling, 5xx, resets)",
        _non_negative(int),
        group="origins",
    ),
    Setting(
        "hedge_after",
        "milliseconds after which a fetch that has not begun to answer is hedged (a second GET "
        "to the next replica, or the same source); auto (the default): the origin's recent "
        "p95 time to first byte; 0: never",
        _hedge_after,
        group="origins",
        unit="ms",
    ),
    Setting(
        "hedge_budget",
        "percentage of fetches that may be hedged (0-100)",
        _percent,
        group="origins",
        unit="%",
    ),
    Setting(
        "idle_timeout",
        "seconds a connection may go without a complete request (idle between requests, or "
        "sending its headers slowly) before it is closed; keep it above the load balancer's "
        "idle timeout for upstream connections",
        _positive(float),
        group="listening",
        unit="s",
    ),
    Setting(
        "max_path_length",
        "longest request path in characters as sent (query string excluded); longer: 414 "
        "before parsing",
        _positive(int),
        group="limits",
    ),
    Setting(
        "max_output_side",
        "largest output width or height in pixels",
        _positive(int),
        group="limits",
        unit="pixels",
    ),
    Setting(
        "max_source_pixels",
        "largest source image in pixels (width x height)",
        _positive(int),
        group="limits",
        unit="pixels",
    ),
    Setting(
        "max_source_bytes",
        "largest original in bytes (e.g. 32MB)",
        _positive(parse_bytes),
        group="limits",
        unit="bytes",
    ),
    Setting(
        "max_frames",
        "most frames an animation may have to stay animated; more: its first frame, as a still",
        _positive(int),
        group="limits",
    ),
    Setting(
        "max_animation_pixels",
        "most pixels over all frames (width x height x frames) an animation may have to stay "
        "animated; more: its first frame, as a still",
        _positive(int),
        group="limits",
        unit="pixels",
    ),
    Setting(
        "cache_size",
        "bytes of rendered images kept in memory; 0 turns the cache off",
        _non_negative(parse_bytes),
        group="caches",
        unit="bytes",
    ),
    Setting(
        "originals_cache_size",
        "bytes of originals kept in memory; 0 turns it off",
        _non_negative(parse_bytes),
        group="caches",
        unit="bytes",
    ),
    Setting(
        "cache_item_max",
        "largest share of a cache one entry may take (0-1)",
        _positive(float),
        group="caches",
    ),
    Setting(
        "disk_cache",
        "directory of the node's disk result tier, shared by its workers and kept across "
        "restarts (behind the memory cache; off when unset)",
        group="caches",
    ),
    Setting(
        "disk_cache_size",
        "bytes the disk result tier may hold (e.g. 10G); least recently used entries go first",
        _positive(parse_bytes),
        group="caches",
        unit="bytes",
    ),
    Setting(
        "result_store",
        "shared result store for many nodes: s3://BUCKET[/PREFIX][?endpoint_url=URL&region=NAME]; "
        "asked after a memory and disk miss, before the origin; written after each render",
        _result_store,
        group="caches",
    ),
    Setting(
        "result_store_timeout",
        "milliseconds a result store lookup may take before the request renders instead",
        _positive(float),
        group="caches",
        unit="ms",
    ),
    Setting(
        "not_found_ttl",
        "seconds a missing original is remembered",
        _non_negative(float),
        group="caches",
        unit="s",
    ),
    Setting(
        "max_age",
        "Cache-Control max-age in seconds for images",
        _non_negative(int),
        group="caches",
        unit="s",
    ),
    Setting(
        "negotiate",
        "formats chosen by the Accept header when the URL names none, in "
        "order of preference ('none': never negotiate)",
        _format,
        multiple=True,
        choices=NEGOTIABLE,
        group="rendering",
    ),
    Setting(
        "avif_effort", "AVIF encoder effort 0 (fastest) to 9", _non_negative(int), group="rendering"
    ),
    Setting(
        "auto_quality",
        "choose the JPEG, WebP and AVIF quality per image: the lowest meeting "
        "--quality-target, in a few trial encodes (a URL's q always wins)",
        flag_only=True,
        group="rendering",
    ),
    Setting(
        "auto_quality_lower_only",
        "--auto-quality never goes above the format's fixed default (it only lowers quality "
        "for images that meet the target below it)",
        flag_only=True,
        group="rendering",
    ),
    Setting(
        "quality_target",
        "the SSIM (RGB, against the output before encoding) --auto-quality aims at; "
        "Save-Data lowers it",
        _quality_target,
        group="rendering",
    ),
    Setting(
        "client_hints",
        "answer Accept-CH and size images by the Sec-CH-DPR hint (URLs without @DPR) and the "
        "Sec-CH-Width hint (sizes with the w option), with Vary",
        flag_only=True,
        group="rendering",
    ),
    Setting(
        "save_data",
        "lower default quality for clients that send Save-Data: on ("
        + ", ".join(
            f"{s.label} {s.save_data_quality}" for s in FORMATS.values() if s.save_data_quality
        )
        + "), with Vary: Save-Data",
        flag_only=True,
        group="rendering",
    ),
    Setting(
        "drain_seconds",
        "after SIGTERM: seconds /readyz reports 503 while still serving (none on Ctrl-C with "
        "--dev)",
        _non_negative(float),
        group="listening",
        unit="s",
    ),
    Setting(
        "shutdown_timeout",
        "after draining: seconds in-flight requests get to finish",
        _non_negative(float),
        group="listening",
        unit="s",
    ),
    Setting(
        "log_format",
        "access log format",
        _choice(*LOG_FORMATS),
        choices=LOG_FORMATS,
        group="observability",
    ),
    Setting(
        "log_level",
        "log level",
        _choice(*LOG_LEVELS),
        choices=LOG_LEVELS,
        group="observability",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    """The effective settings of one tofu server. Build with ``Config.load``."""

    origin: tuple[str, ...] = ()  # [PREFIX/=]SOURCE[|REPLICA...] each (tofu.origins.sources)
    host: str = "127.0.0.1"
    port: int = 8080
    ops_listen: str = ""
    s3_endpoint_url: str | None = None
    secret: tuple[str, ...] = ()  # Config.load adds the --secret-file ones
    secret_file: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    preset: tuple[str, ...] = ()  # NAME=SIZE each
    presets_only: bool = False
    dev: bool = False
    thumbor_key: tuple[str, ...] = ()
    thumbor_weak_key: bool = False
    thumbor_unsafe: bool = False
    thumbor_lenient: bool = False
    watermark: tuple[str, ...] = ()  # PREFIX=KEY[,x,y,alpha[,w_ratio,h_ratio]] each
    workers: int = field(default_factory=default_workers)
    max_renders: int = field(default_factory=default_max_renders)
    vips_concurrency: int = 1
    render_memory: int = 256 << 20
    exact_shrink: bool = False
    max_queue: int = 64
    request_timeout: float = 30.0
    fetch_timeout: float = 10.0
    fetch_retries: int = 2
    hedge_after: float | None = None  # milliseconds; None: adaptive (p95)
    hedge_budget: float = 10.0  # percent
    idle_timeout: float = 75.0
    max_path_length: int = 2048
    max_output_side: int = 4096
    max_source_pixels: int = 50_000_000
    max_source_bytes: int = 32 << 20
    max_frames: int = 500
    max_animation_pixels: int = 50_000_000
    cache_size: int = 256 << 20
    originals_cache_size: int = 64 << 20
    cache_item_max: float = 0.1
    disk_cache: str = ""
    disk_cache_size: int = 1 << 30
    result_store: str = ""
    result_store_timeout: float = 250.0  # milliseconds
    not_found_ttl: float = 10.0
    max_age: int = 31_536_000
    negotiate: tuple[ImageFormat, ...] = (ImageFormat.AVIF, ImageFormat.WEBP)
    avif_effort: int = 0
    auto_quality: bool = False
    auto_quality_lower_only: bool = False
    quality_target: float = AUTO_QUALITY_TARGET
    client_hints: bool = False
    save_data: bool = False
    drain_seconds: float = 5.0
    shutdown_timeout: float = 10.0
    log_format: str = "text"
    log_level: str = "info"

    @property
    def ops_address(self) -> tuple[str, int] | None:
        """Where the operations endpoints are served apart, if they are."""
        return split_host_port(self.ops_listen) if self.ops_listen else None

    @property
    def dev_open(self) -> bool:
        """Whether ``--dev`` opens the grammars: only where nothing restricts them (no secret,
        no thumbor key, no allowlist). Otherwise it would quietly undo what is configured."""
        return self.dev and not (self.secret or self.thumbor_key or self.sizes or self.presets_only)

    def start_warnings(self) -> list[str]:
        """What a server logs as warnings when it starts with this configuration."""
        warnings = []
        if self.dev_open:
            warnings.append(
                "--dev: serving every size unsigned, tofu URLs and thumbor /unsafe/ URLs alike; "
                "never expose this server"
            )
        elif self.dev:
            warnings.append(
                "--dev opens nothing here (a key, an allowlist or --presets-only is "
                "configured); it only lets keys under 32 bytes through"
            )
        if self.thumbor_weak_key and any(
            len(key.encode(errors="surrogateescape")) < MIN_SECRET_BYTES for key in self.thumbor_key
        ):
            warnings.append(
                "--thumbor-weak-key: a thumbor key under 32 bytes signs URLs; anyone with a "
                "signed URL can try to guess it. Rotate to a longer key when the apps allow"
            )
        return warnings

    @property
    def origin_table(self) -> tuple[Route, ...]:
        """The origins parsed, in order (empty if they are invalid)."""
        try:
            return parse_table(self.origin)
        except ValueError:
            return ()

    @property
    def presets(self) -> dict[str, Preset]:
        """The presets by name (the valid ones: ``load`` refuses a configuration with others)."""
        presets: dict[str, Preset] = {}
        for text in self.preset:
            try:
                preset = parse_preset(text, self.max_output_side)
            except ValueError:
                continue
            presets.setdefault(preset.name, preset)
        return presets

    @property
    def default_watermarks(self) -> tuple[tuple[str, Watermark], ...]:
        """``--watermark``: (key prefix, watermark), the longest prefix first."""
        from tofu.frontends.thumbor import watermark_setting  # see _watermark

        parsed = (watermark_setting(text) for text in self.watermark)
        return tuple(sorted(parsed, key=lambda item: len(item[0]), reverse=True))

    @property
    def allowed_sizes(self) -> frozenset[SizeSpec]:
        return frozenset(parse_size_spec(token, self.max_output_side) for token in self.sizes)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
        """Flags (raw strings, lists of strings or True) win over ``TOFU_*`` variables, which
        win over defaults. Raises ``ConfigError`` listing every bad value."""
        values, errors, invalid = _read(SETTINGS, flags, environ)
        config = cls(**values)
        errors.extend(config._problems(set(values) | invalid))
        if errors:
            raise ConfigError("\n".join(errors))
        return config

    def _problems(self, given: set[str]) -> list[str]:
        problems = []
        if not self.origin and "origin" not in given:
            problems.append(
                "--origin is required (a directory, s3://BUCKET[/PREFIX] or http(s)://HOST/BASE/)"
            )
        try:
            parse_table(self.origin)
        except ValueError as exc:
            problems.append(f"--origin: {exc}")
        problems.extend(_signing_key_problems(self))
        if self.thumbor_weak_key and not self.thumbor_key:
            problems.append("--thumbor-weak-key needs --thumbor-key")
        opened = (
            self.secret
            or self.sizes
            or self.thumbor_key
            or self.thumbor_unsafe
            or self.dev
            or self.presets_only
        )
        if not opened:
            problems.append(
                "refusing to serve every size unsigned: give --secret KEY (signed URLs), "
                "--sizes LIST (an allowlist), --thumbor-key KEY (signed thumbor URLs), "
                "or --dev for local development"
            )
        problems.extend(_preset_problems(self.preset, self.max_output_side))
        if self.presets_only and not self.preset:
            problems.append("--presets-only needs at least one --preset")
        if self.presets_only and self.sizes:
            problems.append(
                "--sizes with --presets-only: only presets are served, so the allowlist "
                "would never apply (define presets instead)"
            )
        for token in self.sizes:
            try:
                canonical = parse_size_spec(token, self.max_output_side).token
            except BadRequest as exc:
                problems.append(f"--sizes: {exc.reason}")
                continue
            if token != canonical:
                problems.append(
                    f"--sizes: {token!r} is spelled {canonical!r}: unsigned URLs must use "
                    "the canonical spelling of a size, so list that"
                )
        if not 0 <= self.port <= 65535:
            problems.append("--port must be 0-65535")
        ops = self.ops_address
        if ops is not None and ops[1] == self.port:
            problems.append("--ops-listen must use another port than the public port (--port)")
        if not 0 < self.cache_item_max <= 1:
            problems.append("--cache-item-max must be within (0, 1]")
        if self.avif_effort > 9:
            problems.append("--avif-effort must be 0-9")
        prefixes = [text.partition("=")[0] for text in self.watermark]
        if len(set(prefixes)) < len(prefixes):
            problems.append("--watermark: one watermark per prefix")
        if (
            self.s3_endpoint_url
            and not self.result_store
            and not any(
                source.scheme == "s3" for route in self.origin_table for source in route.sources
            )
        ):
            problems.append("--s3-endpoint-url needs an s3:// origin or --result-store")
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
        out["origins"] = [
            {
                "prefix": route.prefix or "(default)",
                "sources": [source.describe() for source in route.sources],
            }
            for route in self.origin_table
        ]
        out["presets"] = {name: preset.token for name, preset in self.presets.items()}
        return out


# What ``tofu sign`` reads (``signing_config``).
SIGNING_SETTINGS = (
    "secret",
    "secret_file",
    "dev",
    "thumbor_key",
    "thumbor_weak_key",
    "preset",
    "max_output_side",
)


def signing_config(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """What ``tofu sign`` signs with and checks paths against: the secrets, thumbor keys,
    presets and size limit that ``tofu serve`` reads from the same flags and variables, by the
    same code (the first key signs, so the two cannot disagree). Raises ``ConfigError`` when
    there is no key or one is refused."""
    values, errors, _ = _read(tuple(_BY_NAME[name] for name in SIGNING_SETTINGS), flags, environ)
    values.pop("secret_file", None)  # read into "secret" already
    config = Config(**values)
    errors.extend(_signing_key_problems(config))
    errors.extend(_preset_problems(config.preset, config.max_output_side))
    if not config.secret and not config.thumbor_key and not errors:
        errors.append(
            "give --secret KEY or --secret-file PATH (or TOFU_SECRET), or --thumbor-key KEY"
        )
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def _read(
    settings: Iterable[Setting], flags: Mapping[str, Any], environ: Mapping[str, str] | None
) -> tuple[dict[str, Any], list[str], set[str]]:
    """Parsed values of ``settings`` (flags over ``TOFU_*`` variables; secrets from the files
    appended to ``secret``), the problems found, and the names given but invalid."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    errors: list[str] = []
    invalid: set[str] = set()  # given but not valid: already reported, once
    for setting in settings:
        raw: Any = flags.get(setting.name)  # a string, a list of strings, True or None
        if setting.multiple and isinstance(raw, str):
            raw = [raw]
        source = setting.flag
        if raw is None or raw == [] or raw is False:
            raw = environ.get(setting.env)
            source = setting.env
            if raw is None or raw == "":
                continue
            if setting.flag_only:
                raw = raw.lower() in ("1", "true", "yes", "on")
            elif setting.multiple:
                raw = setting.split(raw)
        elif setting.multiple and setting.split_flag:
            raw = [item for value in raw for item in setting.split(value)]
        try:
            if setting.flag_only:
                values[setting.name] = bool(raw)
            elif setting.multiple:
                parsed = (setting.parse(item) for item in raw)
                values[setting.name] = tuple(v for v in parsed if v is not None)
            else:
                values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            errors.append(f"{source}: {exc}")
            invalid.add(setting.name)
    if values.get("secret_file"):
        from_files: list[str] = []
        for path in values["secret_file"]:
            try:
                with open(path, encoding="utf-8") as file:
                    found = _lines(file.read())
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(f"--secret-file: cannot read {path!r}: {exc}")
                continue
            if not found:
                errors.append(f"--secret-file: {path!r} holds no secret")
            from_files.extend(found)
        values["secret"] = values.get("secret", ()) + tuple(from_files)
    return values, errors, invalid


def _preset_problems(presets: Iterable[str], max_side: int) -> list[str]:
    """Preset definitions that do not parse, and names defined twice."""
    problems = []
    names: set[str] = set()
    for text in presets:
        try:
            name = parse_preset(text, max_side).name
        except ValueError as exc:
            problems.append(f"--preset: {exc}")
            continue
        if name in names:
            problems.append(f"--preset: {name!r} is defined twice")
        names.add(name)
    return problems


def _signing_key_problems(config: Config) -> list[str]:
    """The secrets' and thumbor keys' problems, by one rule (``_key_problems``)."""
    return _key_problems("--secret", config.secret, allow_short=config.dev) + _key_problems(
        "--thumbor-key",
        config.thumbor_key,
        allow_short=config.dev or config.thumbor_weak_key,
        short_exception="--thumbor-weak-key (an existing thumbor key) or --dev",
    )


def _key_problems(
    flag: str, keys: Iterable[str], *, allow_short: bool, short_exception: str = "--dev"
) -> list[str]:
    """Signing keys that must not be used, by position (never quoting them): an empty one
    always (anyone could sign), one under ``MIN_SECRET_BYTES`` unless ``allow_short``."""
    problems = []
    for n, key in enumerate(keys, 1):
        size = len(key.encode(errors="surrogateescape"))
        if size == 0:
            problems.append(f"{flag}: key {n} is empty (an unset variable?); anyone could sign")
        elif size < MIN_SECRET_BYTES and not allow_short:
            problems.append(
                f"{flag}: key {n} is {size} bytes; keys must be at least {MIN_SECRET_BYTES} "
                f"bytes (e.g. `openssl rand -base64 32`), unless {short_exception}"
            )
    return problems


def settings_markdown() -> str:
    """docs/settings.md: every setting, grouped as ``tofu serve --help`` groups them, with its
    flag, variable, default in its unit and meaning (``make docs`` writes it; a test checks
    that the file is current)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = [
        "# Settings",
        "",
        "<!-- Generated from tofu/config.py (SETTINGS) by `make docs`; do not edit. -->",
        "",
        "Every setting is a flag of `tofu serve` (and `tofu config`, which prints the effective",
        "configuration with secrets masked) and an environment variable `TOFU_<NAME>`; a flag",
        "wins over its variable. Sizes in bytes take `K`, `M`, `G` (`256MB`, `64k`, `1G`). A",
        "list's flag may be repeated; its variable, and each flag value, is comma- or",
        "space-separated, except "
        + ", ".join(f"`{s.env}`" for s in SETTINGS if s.split is _lines)
        + " (one item per line in the variable, one per flag: an item may hold commas and",
        "spaces) and "
        + ", ".join(f"`{s.env}`" for s in SETTINGS if s.split is _origins)
        + " (`;` or newlines). Bad values are all reported at start, one line each. AWS",
        "credentials and region come from the standard AWS variables and files. `tofu serve",
        "--help` prints the same, grouped the same way.",
        "",
        "Groups: " + ", ".join(f"[{name}](#{name})" for name in GROUPS) + ".",
    ]
    for name, description in GROUPS.items():
        out += [
            "",
            f"## {name}",
            "",
            description[0].upper() + description[1:] + ".",
            "",
            "| flag | variable | default | meaning |",
            "|---|---|---|---|",
        ]
        for setting in SETTINGS:
            if setting.group != name:
                continue
            flag = setting.flag if setting.flag_only else f"{setting.flag} {setting.metavar}"
            default = setting.default or ("off" if setting.flag_only else "(none)")
            meaning = setting.help
            if setting.choices:
                meaning += f" (one of: {', '.join(setting.choices)})"
            out.append(f"| `{flag}` | `{setting.env}` | {cell(default)} | {cell(meaning)} |")
    return "\n".join(out) + "\n"
