"""Signing secrets: one flag value is one secret byte for byte, ``TOFU_SECRET`` holds one secret
per line, ``--secret-file``, the 32-byte minimum, and ``tofu sign`` agreeing with ``tofu serve``
(issue 8, finding 1)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tofu.cli import main
from tofu.config import Config, ConfigError, signing_config
from tofu.signing import sign, signed_path

from .support.servers import SAMPLES

PATH = "/recipes/1203423/280x194c/5366e857.jpg"
# Spaces and commas inside one secret: the probe's "Very-Long-Random-Part x" made two keys.
SPACED = "Very-Long-Random-Part, with spaces x"
LONG_A = "a" * 32
LONG_B = "b-secret-that-is-long-enough-0123456789"


@pytest.fixture(autouse=True)
def no_tofu_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOFU_"):
            monkeypatch.delenv(name)


def load(flags: dict[str, object], environ: dict[str, str] | None = None) -> Config:
    return Config.load({"origin": str(SAMPLES), **flags}, environ or {})


def test_one_flag_value_is_one_secret_byte_for_byte() -> None:
    assert load({"secret": [SPACED]}).secret == (SPACED,)
    padded = "  " + LONG_A + "\t"
    assert load({"secret": [padded, LONG_B]}).secret == (padded, LONG_B)


def test_environment_holds_one_secret_per_line() -> None:
    environ = {"TOFU_SECRET": f"{SPACED}\r\n\n{LONG_B}\n"}
    assert load({}, environ).secret == (SPACED, LONG_B)
    # A comma is part of the secret, not a separator.
    assert load({}, {"TOFU_SECRET": f"{LONG_A},{LONG_B}"}).secret == (f"{LONG_A},{LONG_B}",)


@pytest.mark.parametrize("secret", ["x", "s" * 31])  # empty ones: below
def test_short_secrets_are_refused_at_start(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"secret": [LONG_A, secret]})
    message = str(caught.value)
    assert "at least 32 bytes" in message and "--dev" in message
    assert len(secret) < 2 or secret not in message  # never echoed


def test_short_secrets_are_allowed_in_dev_mode() -> None:
    assert load({"secret": ["x"], "dev": True}).secret == ("x",)


def test_length_is_counted_in_bytes() -> None:
    assert load({"secret": ["é" * 16]}).secret == ("é" * 16,)  # 32 bytes in UTF-8


def test_secret_file_one_per_line_joins_the_flag_secrets(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{SPACED}\n\n   \n{LONG_B}\r\n")
    config = load({"secret": [LONG_A], "secret_file": [str(path)]})
    assert config.secret == (LONG_A, SPACED, LONG_B)
    assert load({}, {"TOFU_SECRET_FILE": str(path)}).secret == (SPACED, LONG_B)
    assert "********" in str(config.describe()["secret"])
    assert SPACED not in str(config.describe())


def test_secret_file_problems_are_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError) as caught:
        load({"secret_file": [str(tmp_path / "missing"), str(empty)]})
    lines = str(caught.value).splitlines()
    assert any(line.startswith("--secret-file:") and "missing" in line for line in lines)
    assert any(line.startswith("--secret-file:") and "no secret" in line for line in lines)


def test_sign_and_serve_read_secrets_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{LONG_B}\n")
    flags = {"secret": [SPACED], "secret_file": [str(path)]}
    assert signing_config(flags, {}).secret == load(flags).secret
    environ = {"TOFU_SECRET": f"{SPACED}\n{LONG_A}"}
    assert signing_config({}, environ).secret == load({}, environ).secret


def test_cli_sign_signs_with_the_whole_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", PATH, "--secret", SPACED]) == 0
    assert capsys.readouterr().out.strip() == signed_path(PATH, SPACED)


def test_cli_sign_reads_a_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{LONG_B}\n{LONG_A}\n")
    assert main(["sign", PATH, "--secret-file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == signed_path(PATH, LONG_B)


def test_cli_sign_refuses_a_short_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", PATH, "--secret", "x"]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err
    assert main(["sign", PATH, "--secret", "x", "--dev"]) == 0
    assert capsys.readouterr().out.strip() == signed_path(PATH, "x")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_served_secret_is_the_flag_value_and_its_words_are_not_keys(
    tofu_process, capsys: pytest.CaptureFixture[str]
) -> None:
    tofu = tofu_process(["--origin", str(SAMPLES), "--secret", SPACED, "--workers", "1"])
    assert main(["sign", PATH, "--secret", SPACED]) == 0
    minted = capsys.readouterr().out.strip()
    assert _status(tofu.url + minted) == 200
    for word in ("x", "Very-Long-Random-Part", "with", "spaces"):
        assert _status(f"{tofu.url}/{sign(PATH, word)}{PATH}") == 403


# --- thumbor keys: the same rule as secrets (issue 17) --------------------------------------

THUMBOR_LONG = "t" * 32


@pytest.mark.parametrize(
    "extra", [{}, {"dev": True}, {"thumbor_weak_key": True}, {"secret": [LONG_A]}]
)
def test_an_empty_thumbor_key_is_always_refused(extra: dict[str, object]) -> None:
    # `--thumbor-key "$THUMBOR_SECURITY_KEY"` with the variable unset: anyone could sign.
    with pytest.raises(ConfigError, match=r"--thumbor-key: key 1 is empty"):
        load({"thumbor_key": [""], **extra})
    with pytest.raises(ConfigError, match=r"--thumbor-key: key 2 is empty"):
        load({"thumbor_key": [THUMBOR_LONG, ""], **extra})


def test_an_empty_secret_is_refused_even_in_dev_mode() -> None:
    with pytest.raises(ConfigError, match=r"--secret: key 1 is empty"):
        load({"secret": [""], "dev": True})


@pytest.mark.parametrize("key", ["q", "s" * 31])
def test_a_short_thumbor_key_is_refused_like_a_short_secret(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"thumbor_key": [THUMBOR_LONG, key]})
    message = str(caught.value)
    assert message.startswith("--thumbor-key: key 2 is")
    assert "at least 32 bytes" in message and "--thumbor-weak-key" in message
    assert key not in message  # never echoed
    assert load({"thumbor_key": [THUMBOR_LONG]}).thumbor_key == (THUMBOR_LONG,)


def test_an_existing_weak_thumbor_key_is_accepted_when_stated() -> None:
    config = load({"thumbor_key": ["my-old-key"], "thumbor_weak_key": True})
    assert config.thumbor_key == ("my-old-key",)
    assert any("--thumbor-weak-key" in w for w in config.start_warnings())
    with pytest.raises(ConfigError, match="--thumbor-weak-key needs --thumbor-key"):
        load({"secret": [LONG_A], "thumbor_weak_key": True})


def test_weak_thumbor_key_warns_at_every_start(tofu_process) -> None:
    for _ in range(2):
        tofu = tofu_process(
            ["--origin", str(SAMPLES), "--thumbor-key", "old", "--thumbor-weak-key"]
        )
        tofu.stop()
        assert "--thumbor-weak-key" in tofu.log() and "WARNING" in tofu.log().upper()


@pytest.mark.parametrize(
    "configured",
    [
        {"secret": (LONG_A,)},
        {"thumbor_key": (THUMBOR_LONG,)},
        {"sizes": ("280x194c",)},
    ],
)
async def test_dev_mode_opens_no_grammar_when_keys_or_sizes_are_configured(
    make_client, configured: dict[str, object]
) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True, **configured)
    for path in (
        "/unsafe/300x200/recipes/1203423/5366e857.jpg",
        "/recipes/1203423/301x194c/5366e857.jpg",
    ):
        async with client.get(path) as response:
            assert response.status in (400, 403), path  # never served unsigned


def test_dev_mode_says_what_it_opens() -> None:
    opened = load({"dev": True}).start_warnings()
    assert any("--dev" in w and "unsigned" in w and "/unsafe/" in w for w in opened)
    closed = load({"dev": True, "secret": [LONG_A]}).start_warnings()
    assert any("--dev" in w and "opens nothing" in w for w in closed)
