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
from tofu.origins.sources import Route, parse_route, parse_table
from tofu.transform import ImageFormat
from tofu.urls import SizeSpec, parse_size_spec


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


@dataclass(frozen=True)
class Setting:
    name: str  # the Config field; flag --name-with-dashes; env TOFU_NAME
    help: str
    parse: Callable[[str], Any] = str
    multiple: bool = False  # a list: the flag repeats, the TOFU_* value is split by `split`
    flag_only: bool = False  # a boolean switch
    secret: bool = False  # masked by `tofu config`
    split: Callable[[str], tuple[str, ...]] = _words  # the list syntax of the TOFU_* value
    split_flag: bool = True  # each flag value is split the same way; False: one value, one item

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TOFU_" + self.name.upper()


def _secrets(name: str, help: str) -> Setting:
    """A list of secrets: one flag value is one secret, byte for byte (never split on spaces
    or commas); the variable holds one per line; masked by ``tofu config``."""
    return Setting(name, help, _secret, multiple=True, secret=True, split=_lines, split_flag=False)


def _origin(text: str) -> str:
    if not text:
        raise ValueError(
            "must be [PREFIX/=]SOURCE: a directory, s3://BUCKET[/PREFIX] or http(s)://"
        )
    parse_route(text)  # each backend validates its own sources
    return text


def _origins(text: str) -> tuple[str, ...]:
    """``TOFU_ORIGIN``: origins separated by newlines or ``;`` (no source holds either)."""
    return tuple(part.strip() for part in re.split(r"[;\n]", text) if part.strip())


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


# Measured on 2 cores (README, Processes and threads): one worker rendering cores + 1 at once
# spent 7 % less CPU per miss than a worker per core (no oversubscription, no routing between
# workers) for half the memory, and the extra slot covers the gaps while a render's original
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
    ),
    Setting("host", "address to listen on"),
    Setting("port", "port to listen on", _non_negative(int)),
    Setting(
        "ops_listen",
        "HOST:PORT (or :PORT, every interface) to serve /metrics, /healthz and /readyz on; "
        "/metrics is then not served on the public port (404). With several workers, the "
        "first worker serves it (its /metrics covers all workers)",
        _host_port,
    ),
    Setting("s3_endpoint_url", "S3 endpoint for MinIO, SeaweedFS, Ceph (default: AWS)"),
    _secrets(
        "secret",
        "URL signing secret, at least 32 bytes, taken byte for byte; repeat the flag for "
        "rotation (all are accepted, the first signs). The variable holds one per line",
    ),
    Setting(
        "secret_file",
        "file of signing secrets, one per line (blank lines ignored), added after the --secret "
        "ones: keeps them out of ps output. The variable holds one path per line",
        multiple=True,
        split=_lines,
        split_flag=False,
    ),
    Setting(
        "sizes",
        "allowlist of size tokens served without a signature, e.g. 280,280x194c",
        multiple=True,
    ),
    Setting(
        "dev",
        "development mode: with no key and no allowlist configured, every URL of both "
        "grammars is served unsigned; keys shorter than 32 bytes are accepted",
        flag_only=True,
    ),
    _secrets(
        "thumbor_key",
        "thumbor SECURITY_KEY: serve thumbor URLs signed with it, taken byte for byte; repeat "
        "the flag for rotation. The variable holds one per line",
    ),
    Setting(
        "thumbor_weak_key",
        "accept --thumbor-key values under 32 bytes: an existing thumbor SECURITY_KEY that "
        "cannot change without re-signing every URL in its apps (a warning at every start)",
        flag_only=True,
    ),
    Setting(
        "thumbor_unsafe",
        "serve thumbor's unsigned /unsafe/ URLs (ALLOW_UNSAFE_URL; also with --dev when no "
        "key or allowlist is configured)",
        flag_only=True,
    ),
    Setting(
        "workers",
        "worker processes sharing the port (default: one per 4 cores, at least one)",
        _positive(int),
    ),
    Setting(
        "max_renders",
        "renders at once on the node, all workers together, one thread each; more wait in the "
        "queue (default: the number of cores + 1: a render's fetch and planning leave a core "
        "idle otherwise)",
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
        "SSIM >= 0.98 instead of >= 0.97, about 35%% more CPU per render)",
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
    Setting(
        "hedge_after",
        "milliseconds after which a fetch that has not begun to answer is hedged (a second GET "
        "to the next replica, or the same source); auto (the default): the origin's recent "
        "p95 time to first byte; 0: never",
        _hedge_after,
    ),
    Setting(
        "hedge_budget",
        "percentage of fetches that may be hedged (0-100)",
        _percent,
    ),
    Setting(
        "idle_timeout",
        "seconds a connection may go without a complete request (idle between requests, or "
        "sending its headers slowly) before it is closed; keep it above the load balancer's "
        "idle timeout for upstream connections",
        _positive(float),
    ),
    Setting(
        "max_path_length",
        "longest request path in characters as sent (query string excluded); longer: 414 "
        "before parsing",
        _positive(int),
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
        "auto_quality",
        "choose the JPEG, WebP and AVIF quality per image: the lowest meeting "
        "--quality-target, in a few trial encodes (a URL's q always wins)",
        flag_only=True,
    ),
    Setting(
        "auto_quality_lower_only",
        "--auto-quality never goes above the format's fixed default (it only lowers quality "
        "for images that meet the target below it)",
        flag_only=True,
    ),
    Setting(
        "quality_target",
        "the SSIM (RGB, against the output before encoding) --auto-quality aims at; "
        "Save-Data lowers it",
        _quality_target,
    ),
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

    origin: tuple[str, ...] = ()  # [PREFIX/=]SOURCE[|REPLICA...] each (tofu.origins.sources)
    host: str = "127.0.0.1"
    port: int = 8080
    ops_listen: str = ""
    s3_endpoint_url: str | None = None
    secret: tuple[str, ...] = ()  # Config.load adds the --secret-file ones
    secret_file: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    dev: bool = False
    thumbor_key: tuple[str, ...] = ()
    thumbor_weak_key: bool = False
    thumbor_unsafe: bool = False
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
        return self.dev and not (self.secret or self.thumbor_key or self.sizes)

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
                "--dev opens nothing here (a key or an allowlist is configured); it only lets "
                "keys under 32 bytes through"
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
        problems.extend(_key_problems("--secret", self.secret, allow_short=self.dev))
        problems.extend(
            _key_problems(
                "--thumbor-key",
                self.thumbor_key,
                allow_short=self.dev or self.thumbor_weak_key,
                short_exception="--thumbor-weak-key (an existing thumbor key) or --dev",
            )
        )
        if self.thumbor_weak_key and not self.thumbor_key:
            problems.append("--thumbor-weak-key needs --thumbor-key")
        opened = self.secret or self.sizes or self.thumbor_key or self.thumbor_unsafe or self.dev
        if not opened:
            problems.append(
                "refusing to serve every size unsigned: give --secret KEY (signed URLs), "
                "--sizes LIST (an allowlist), --thumbor-key KEY (signed thumbor URLs), "
                "or --dev for local development"
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
        if self.s3_endpoint_url and not any(
            source.scheme == "s3" for route in self.origin_table for source in route.sources
        ):
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
        out["origins"] = [
            {
                "prefix": route.prefix or "(default)",
                "sources": [source.describe() for source in route.sources],
            }
            for route in self.origin_table
        ]
        return out


def signing_secrets(
    flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The secrets ``tofu serve`` verifies with, read from the same flags and variables by the
    same code (``tofu sign`` signs with the first, so the two cannot disagree). Raises
    ``ConfigError`` when there is none or one is refused."""
    signing = tuple(_BY_NAME[name] for name in ("secret", "secret_file", "dev"))
    values, errors, _ = _read(signing, flags, environ)
    secrets: tuple[str, ...] = values.get("secret", ())
    errors.extend(_key_problems("--secret", secrets, allow_short=values.get("dev", False)))
    if not secrets and not errors:
        errors.append("give --secret KEY or --secret-file PATH, or set TOFU_SECRET")
    if errors:
        raise ConfigError("\n".join(errors))
    return secrets


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
