"""The ``tofu`` command: ``serve``, ``sign`` and ``config``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tofu.config import (
    GROUPS,
    SETTINGS,
    SIGNING_SETTINGS,
    Config,
    ConfigError,
    Setting,
    signing_config,
)
from tofu.errors import BadRequest
from tofu.frontends.thumbor import parse_options
from tofu.frontends.thumbor import sign as thumbor_sign
from tofu.frontends.tofu import TofuFrontend
from tofu.signing import signed_path

_EPILOG = """\
URL grammar: /[{signature}/]{prefix...}/{size}/{name} renders the original at {prefix...}/{name}.
Size tokens: 280 (width), x200 (height), 650s or 894x1461s (fit inside), 280x194c (cover + crop),
280x194a (smart crop), 280x194f30-60 (crop around a focal point, percent), then options:
q60 (quality), u (allow upscaling), @2x (device pixel ratio), w (width from the Sec-CH-Width
client hint), .webp/.avif/.png/.jpeg/.gif (format). A preset's name (--preset card=280x194c)
may stand where a size token goes, and so may info: a JSON document about the original (size,
format, dominant colour, BlurHash, ThumbHash).

Every serve option can also be set as TOFU_<NAME> (e.g. TOFU_ORIGIN, TOFU_CACHE_SIZE=512MB);
lists are comma- or space-separated (TOFU_SIZES=280,650s), but TOFU_SECRET, TOFU_SECRET_FILE,
TOFU_THUMBOR_KEY and TOFU_PRESET hold one item per line and TOFU_ORIGIN separates with ;.
AWS credentials and region come from the standard AWS variables and config files.
Every setting in one table: docs/settings.md.
"""


def _add_serve_options(
    parser: argparse.ArgumentParser, settings: Sequence[Setting] = SETTINGS
) -> None:
    """The settings as options, in argument groups (GROUPS' order), each help line ending with
    its variable, its default in its unit and its choices."""
    groups = {
        name: parser.add_argument_group(name, description)
        for name, description in GROUPS.items()
        if any(setting.group == name for setting in settings)
    }
    for setting in settings:
        notes = [f"env {setting.env}"]
        if setting.default:
            notes.append(f"default {setting.default}")
        if setting.choices:
            notes.append(f"one of: {', '.join(setting.choices)}")
        # argparse formats help with %: a literal one must be doubled.
        text = f"{setting.help} [{'; '.join(notes)}]".replace("%", "%%")
        group = groups[setting.group]
        if setting.flag_only:
            group.add_argument(setting.flag, action="store_true", help=text)
        elif setting.multiple:
            group.add_argument(
                setting.flag,
                action="append",
                default=[],
                metavar=setting.metavar,
                help=text,
            )
        else:
            group.add_argument(setting.flag, metavar=setting.metavar, help=text)


def _version() -> str:
    import platform
    from importlib.metadata import version

    import pyvips

    return (
        f"tofu {version('tofu')} (libvips {pyvips.version(0)}.{pyvips.version(1)}."
        f"{pyvips.version(2)}, pyvips {pyvips.__version__}, Python {platform.python_version()})"
    )


class _VersionAction(argparse.Action):
    """``--version``, computed only when asked (it loads libvips)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tofu",
        description="On-demand image resizing proxy: TOFU-style URLs, originals from S3, HTTP "
        "or disk, rendered with libvips, cached in memory.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        usage="%(prog)s [OPTIONS]  (grouped below; docs/settings.md has them in one table)",
        help="run the image server",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_options(serve)
    config = commands.add_parser(
        "config",
        usage="%(prog)s [OPTIONS]  (those of tofu serve)",
        help="print the effective configuration (secrets masked) and exit",
    )
    _add_serve_options(config)
    sign = commands.add_parser(
        "sign",
        help="print PATH with its signature prepended, refusing what the server would refuse",
    )
    sign.add_argument("path", help="an unsigned path, e.g. /recipes/1/280x194c/photo.jpg")
    sign.add_argument(
        "--thumbor",
        action="store_true",
        help="sign a thumbor path (/300x200/smart/a.jpg) with the first --thumbor-key",
    )
    # The same settings, read by the same code as `serve`: the first key signs.
    _add_serve_options(sign, [s for s in SETTINGS if s.name in SIGNING_SETTINGS])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sign":
        return _sign(args)
    try:
        config = Config.load(vars(args))
    except ConfigError as exc:
        print(f"tofu: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        json.dump(config.describe(), sys.stdout, indent=2)
        print()
        return 0
    from tofu.runner import run

    run(config)
    return 0


def _sign(args: argparse.Namespace) -> int:
    try:
        config = signing_config(vars(args))
    except ConfigError as exc:
        print(f"tofu sign: {exc}", file=sys.stderr)
        return 2
    path: str = args.path
    if not path.startswith("/"):
        print("tofu sign: PATH must start with /", file=sys.stderr)
        return 2
    try:
        if args.thumbor:
            if not config.thumbor_key:
                raise BadRequest("--thumbor signs with --thumbor-key (or TOFU_THUMBOR_KEY)")
            # The server's own parser: what it would refuse is refused here, in its words.
            options = path.removeprefix("/")
            parse_options(options, config.max_output_side)
            print(f"/{thumbor_sign(options, config.thumbor_key[0])}/{options}")
            return 0
        if not config.secret:
            raise BadRequest("signing a tofu URL needs --secret (or --thumbor to sign thumbor's)")
        TofuFrontend(config).parse(path)
    except BadRequest as exc:
        print(f"tofu sign: {exc.reason}", file=sys.stderr)
        return 2
    print(signed_path(path, config.secret[0]))
    return 0
