"""Configuration from flags and ``TOFU_*`` variables, and the ``tofu`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tofu.cli import main
from tofu.config import SETTINGS, Config, ConfigError, parse_bytes
from tofu.transform import ImageFormat

from .support.servers import ROOT, SAMPLES, free_port

SERVE_OPTIONS = [s.flag for s in SETTINGS]
ENV_NAMES = [s.env for s in SETTINGS]
NEW = "new-secret-0123456789abcdefghijklmnop"
OLD = "old-secret-0123456789abcdefghijklmnop"


@pytest.fixture(autouse=True)
def no_tofu_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own environment must not leak into configuration."""
    for name in list(os.environ):
        if name.startswith("TOFU_"):
            monkeypatch.delenv(name)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFU_")}
    return {**env, **extra}


def help_text(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_names_the_commands_and_the_grammar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text([], capsys)
    grammar = ["280", "x200", "650s", "894x1461s", "280x194c", "280x194a", "280x194f30-60"]
    grammar += ["q60", "u (allow upscaling)", "@2x", ".webp", ".avif", ".png", ".jpeg"]
    missing = [word for word in ["serve", "sign", "config", "TOFU_", *grammar] if word not in text]
    assert not missing


@pytest.mark.parametrize("command", ["serve", "config"])
def test_command_help_mentions_every_option_and_its_variable(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text([command], capsys)
    missing = [name for name in [*SERVE_OPTIONS, *ENV_NAMES] if name not in text]
    assert not missing


def test_sign_help(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["sign"], capsys)
    assert "--secret" in text
    assert "TOFU_SECRET" in text


def test_every_setting_is_a_config_field_with_a_default() -> None:
    defaults = Config()
    for setting in SETTINGS:
        assert hasattr(defaults, setting.name)


def test_environment_variables_configure_tofu() -> None:
    config = Config.load(
        {},
        {
            "TOFU_ORIGIN": str(SAMPLES),
            "TOFU_SECRET": f"{NEW}\n{OLD}",
            "TOFU_SIZES": "280, 280x194c 650s",
            "TOFU_PORT": "9123",
            "TOFU_CACHE_SIZE": "64MB",
            "TOFU_NEGOTIATE": "webp",
            "TOFU_WORKERS": "1",
            "TOFU_LOG_FORMAT": "json",
        },
    )
    assert config.origin == (str(SAMPLES),)
    assert config.secret == (NEW, OLD)
    assert config.sizes == ("280", "280x194c", "650s")
    assert len(config.allowed_sizes) == 3
    assert config.port == 9123
    assert config.cache_size == 64 << 20
    assert config.negotiate == (ImageFormat.WEBP,)
    assert config.workers == 1
    assert config.log_format == "json"


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False)])
def test_dev_from_the_environment(value: str, expected: bool) -> None:
    environ = {"TOFU_ORIGIN": str(SAMPLES), "TOFU_DEV": value, "TOFU_SIZES": "280"}
    assert Config.load({}, environ).dev is expected


def test_negotiate_none_turns_negotiation_off() -> None:
    environ = {"TOFU_ORIGIN": str(SAMPLES), "TOFU_DEV": "1", "TOFU_NEGOTIATE": "none"}
    assert Config.load({}, environ).negotiate == ()


def test_flags_beat_the_environment() -> None:
    environ = {
        "TOFU_ORIGIN": "/definitely/not/here",
        "TOFU_SECRET": "from-env-" + "e" * 32,
        "TOFU_PORT": "1",
        "TOFU_SIZES": "0",  # invalid, but the flag replaces it
    }
    flags = {
        "origin": str(SAMPLES),
        "secret": [NEW, OLD],
        "port": "8081",
        "sizes": ["280"],
    }
    config = Config.load(flags, environ)
    assert config.origin == (str(SAMPLES),)
    assert config.secret == (NEW, OLD)
    assert config.port == 8081
    assert config.sizes == ("280",)


def test_unset_flags_fall_back_to_the_environment_then_defaults() -> None:
    flags = {"origin": None, "secret": [], "dev": False, "port": None}
    config = Config.load(flags, {"TOFU_ORIGIN": str(SAMPLES), "TOFU_SECRET": NEW})
    assert config.origin == (str(SAMPLES),)
    assert config.secret == (NEW,)
    assert config.port == Config().port


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", 1 << 20), ("64k", 64 << 10), ("256MB", 256 << 20), ("1g", 1 << 30)],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "1.5MB", "-1", "10 parsecs"])
def test_parse_bytes_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_refuses_to_serve_everything_unsigned() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load({"origin": str(SAMPLES)}, {})
    message = str(caught.value)
    assert "--secret" in message and "--sizes" in message and "--dev" in message


def test_serve_without_secret_sizes_or_dev_exits_2_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tofu", "serve", "--origin", "samples", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to serve every size unsigned" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_every_bad_value_is_reported_one_line_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = [
        "config",
        "--origin",
        str(tmp_path / "missing"),
        "--port",
        "http",
        "--workers",
        "0",
        "--sizes",
        "280,0x100",
        "--log-format",
        "xml",
        "--cache-size",
        "lots",
        "--avif-effort",
        "12",
        "--cache-item-max",
        "2",
        "--negotiate",
        "gif",
        "--request-timeout",
        "-1",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    header, *problems = err.strip().splitlines()
    assert header == "tofu: invalid configuration:"
    expected_starts = [
        "--origin:",
        "--port:",
        "--workers:",
        "--request-timeout:",
        "--cache-size:",
        "--negotiate:",
        "--log-format:",
        "--sizes:",
        "--cache-item-max",
        "--avif-effort",
    ]
    assert len(problems) == len(expected_starts), problems
    for start in expected_starts:
        assert sum(line.startswith(start) for line in problems) == 1, (start, problems)
    assert "'0x100'" in err
    assert "is not a directory" in err


def test_bad_environment_values_name_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load({}, {"TOFU_ORIGIN": str(SAMPLES), "TOFU_DEV": "1", "TOFU_MAX_FRAMES": "many"})
    assert str(caught.value).splitlines() == [
        "TOFU_MAX_FRAMES: invalid literal for int() with base 10: 'many'"
    ]


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"port": "70000"}, "--port must be 0-65535"),
        ({"s3_endpoint_url": "http://127.0.0.1:8333"}, "--s3-endpoint-url needs an s3:// origin"),
        ({"origin": "s3://"}, "names no bucket"),
        ({"origin": None}, "--origin is required"),
    ],
)
def test_inconsistent_settings_are_refused(flags: dict[str, str | None], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load({"origin": str(SAMPLES), "dev": True, **flags}, {})
    assert problem in str(caught.value)


def test_s3_origin_is_accepted_with_an_endpoint() -> None:
    config = Config.load(
        {"origin": "s3://bucket/prefix", "s3_endpoint_url": "http://127.0.0.1:8333", "dev": True},
        {},
    )
    assert config.origin == ("s3://bucket/prefix",)


def test_config_prints_json_with_secrets_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOFU_SECRET", f"env-secret-one-{NEW}\nenv-secret-two-{OLD}")
    monkeypatch.setenv("TOFU_MAX_AGE", "600")
    args = ["config", "--origin", str(SAMPLES), "--sizes", "280x194c", "--workers", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "env-secret" not in out
    described = json.loads(out)
    assert described["secret"] == ["********", "********"]
    assert described["origin"] == [str(SAMPLES)]
    assert described["sizes"] == ["280x194c"]
    assert described["workers"] == 2
    assert described["max_age"] == 600
    assert described["negotiate"] == ["avif", "webp"]
    assert set(described) == {s.name for s in SETTINGS} | {"origins", "presets"}
    assert described["origins"] == [{"prefix": "(default)", "sources": [str(SAMPLES)]}]


def test_config_subprocess_reads_the_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tofu", "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean_env(TOFU_ORIGIN="samples", TOFU_SECRET=f"{NEW}\n{OLD}", TOFU_SIZES="280,650s"),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["secret"] == ["********", "********"]
    assert described["sizes"] == ["280", "650s"]


# --- a new user's first commands (issue 20) ------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("tofu 0.") and "libvips" in out and "Python" in out


def test_a_taken_port_is_one_line_naming_it() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "-m", "tofu", "serve", "--dev", "--origin", str(SAMPLES)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("TOFU_")},
        )
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port} is in use" in errors[0] and "--port" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_dev_mode_stops_at_once_on_ctrl_c(tofu_process) -> None:
    import signal
    import time

    tofu = tofu_process(["--dev", "--origin", str(SAMPLES)])  # drain: 5 s by default
    started = time.monotonic()
    tofu.process.send_signal(signal.SIGINT)
    tofu.process.wait(timeout=20)
    assert time.monotonic() - started < 3.0  # not the production drain


# --- tofu sign refuses what tofu serve refuses (issue 20) ------------------------------------

SIGN_KEY = "sign-secret-0123456789abcdefghijklmn"


@pytest.mark.parametrize(
    ("path", "thumbor"),
    [
        ("/recipes/1203423/5366e857.jpg", False),  # no size token
        ("/recipes/1/280q/cups.jpg", False),
        ("/recipes/1/99999/cups.jpg", False),  # over --max-output-side
        ("/recipes/1/280x194c/..%2Fetc/passwd", False),  # a key that would climb out
        ("/recipes/1/nosuchpreset/cups.jpg", False),
        ("/300x200/filters:brightness(1000)/a.jpg", True),
        ("/trim:9999/300x200/a.jpg", True),  # tolerance over thumbor's 442
    ],
)
async def test_sign_refuses_what_serve_refuses(
    path: str, thumbor: bool, make_client, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--thumbor", "--thumbor-key", SIGN_KEY] if thumbor else ["--secret", SIGN_KEY]
    flags += ["--preset", "card=280x194c"]
    assert main(["sign", path, *flags]) == 2
    refusal = capsys.readouterr().err.strip()
    assert refusal.startswith("tofu sign: ")
    client = await make_client(
        origin=(str(SAMPLES),),
        secret=() if thumbor else (SIGN_KEY,),
        thumbor_key=(SIGN_KEY,) if thumbor else (),
        preset=("card=280x194c",),
    )
    # What the server answers the same path, signed as a client would sign it anyway.
    if thumbor:
        from tofu.frontends.thumbor import sign as thumbor_sign

        signed = f"/{thumbor_sign(path[1:], SIGN_KEY)}{path}"
    else:
        from tofu.signing import signed_path

        signed = signed_path(path, SIGN_KEY)
    async with client.get(signed) as response:
        assert response.status == 400
        assert refusal.removeprefix("tofu sign: ") == (await response.text()).strip()


def test_sign_signs_what_serve_serves(capsys: pytest.CaptureFixture[str]) -> None:
    from tofu.frontends.thumbor import sign as thumbor_sign
    from tofu.signing import signed_path

    assert (
        main(
            ["sign", "/recipes/1/card/cups.jpg", "--secret", SIGN_KEY, "--preset", "card=280x194c"]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == signed_path("/recipes/1/card/cups.jpg", SIGN_KEY)
    assert main(["sign", "--thumbor", "/300x200/smart/a.jpg", "--thumbor-key", SIGN_KEY]) == 0
    expected = f"/{thumbor_sign('300x200/smart/a.jpg', SIGN_KEY)}/300x200/smart/a.jpg"
    assert capsys.readouterr().out.strip() == expected


def test_default_watermarks_from_flags_and_the_environment() -> None:
    environ = {
        "TOFU_ORIGIN": str(SAMPLES),
        "TOFU_DEV": "1",
        "TOFU_WATERMARK": "=marks/all.png\nrecipes/=marks/r.png,center,-5p,40,20,none\n",
    }
    config = Config.load({}, environ)
    prefixes = [(prefix, mark.key, mark.x, mark.y, mark.alpha, mark.width, mark.height)
                for prefix, mark in config.default_watermarks]  # fmt: skip
    assert prefixes == [
        ("recipes/", "marks/r.png", "center", "-5p", 40, 20, None),  # the longest prefix first
        ("", "marks/all.png", "-10", "-10", 0, None, None),  # bottom right, 10 px in
    ]
    assert Config.load({"watermark": ["a/=m.png"]}, environ).watermark == ("a/=m.png",)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("m.png", "is not PREFIX=KEY"),
        ("a/=m.png,left,0,0", "is not KEY,x,y,alpha"),
        ("a/=m.png,0,0,101", "watermark(alpha) must be 0 to 100"),
        ("a/=../m.png", "dot segment"),
        ("a/=https://example.com/m.png", "not a URL"),
    ],
)
def test_bad_watermarks_are_refused(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load({"origin": str(SAMPLES), "dev": True, "watermark": [value]}, {})
    assert str(caught.value).startswith("--watermark:") and problem in str(caught.value)


def test_one_watermark_per_prefix() -> None:
    with pytest.raises(ConfigError, match="one watermark per prefix"):
        Config.load({"origin": str(SAMPLES), "dev": True, "watermark": ["a=m.png", "a=n.png"]}, {})
