"""Signed URLs, secret rotation, the size allowlist and dev mode; ``tofu sign``."""

from __future__ import annotations

import os
import string
import subprocess
import sys
from collections.abc import Iterable

import pytest

from tofu.cli import main
from tofu.errors import Forbidden
from tofu.signing import Guard, sign, signed_path, url_for
from tofu.transform import Transform
from tofu.urls import SIGNATURE_RE, parse_path, parse_size, parse_size_spec
from tofu.urls import ParsedPath as Parsed

from .support.servers import ROOT

SECRET = "s3cret-current-0123456789abcdefghij"
OLD_SECRET = "s3cret-previous-0123456789abcdefgh"
PATH = "/recipes/1203423/280x194c/5366e857.jpg"
BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def guard(secrets: Iterable[str] = (), sizes: Iterable[str] = (), *, open: bool = False) -> Guard:
    return Guard(secrets, [parse_size_spec(t, 4096) for t in sizes], open=open)


def parse(path: str, g: Guard) -> Parsed:
    return parse_path(path, max_side=4096, expect_signature=g.expects_signatures)


def allowed(path: str, g: Guard) -> bool:
    try:
        g.check(parse(path, g))
    except Forbidden:
        return False
    return True


def refusal(path: str, g: Guard) -> str:
    with pytest.raises(Forbidden) as caught:
        g.check(parse(path, g))
    assert caught.value.status == 403
    return caught.value.reason


def test_signature_is_urlsafe_base64_of_hmac_sha256() -> None:
    signature = sign(PATH, SECRET)
    assert SIGNATURE_RE.fullmatch(signature)
    assert sign(PATH, SECRET) == signature  # deterministic
    assert sign(PATH, OLD_SECRET) != signature
    assert signed_path(PATH, SECRET) == f"/{signature}{PATH}"


def test_good_signature_is_accepted() -> None:
    assert allowed(signed_path(PATH, SECRET), guard([SECRET]))


def test_signature_under_another_secret_is_refused() -> None:
    assert refusal(signed_path(PATH, "someone-else"), guard([SECRET])) == "invalid signature"


def test_missing_signature_is_refused() -> None:
    assert refusal(PATH, guard([SECRET])) == "missing signature"


@pytest.mark.parametrize(
    "tampered",
    [
        PATH.replace("280x194c", "281x194c"),  # size changed
        PATH.replace("280x194c", "280x194cq100"),  # option added
        PATH.replace("1203423", "1203424"),  # another original
        PATH + "x",
        "/extra" + PATH,
    ],
)
def test_signature_does_not_cover_a_tampered_path(tampered: str) -> None:
    signature = sign(PATH, SECRET)
    assert refusal(f"/{signature}{tampered}", guard([SECRET])) == "invalid signature"


@pytest.mark.parametrize("position", [0, 1, 20, 41])
def test_tampered_signature_is_refused(position: int) -> None:
    signature = sign(PATH, SECRET)
    replacement = "A" if signature[position] != "A" else "B"
    tampered = signature[:position] + replacement + signature[position + 1 :]
    assert refusal(f"/{tampered}{PATH}", guard([SECRET])) == "invalid signature"


def test_only_the_canonical_spelling_of_a_signature_is_accepted() -> None:
    """The last of 43 base64 characters carries 4 bits of the digest and 2 unused bits: the
    other three spellings decode to the same bytes but are not the signature."""
    signature = sign(PATH, SECRET)
    index = BASE64URL.index(signature[-1])
    for alias in (BASE64URL[(index & ~3) + low] for low in range(4)):
        candidate = f"/{signature[:-1]}{alias}{PATH}"
        assert allowed(candidate, guard([SECRET])) == (alias == signature[-1])


def test_rotation_accepts_urls_signed_by_any_secret() -> None:
    g = guard([SECRET, OLD_SECRET])
    assert allowed(signed_path(PATH, SECRET), g)
    assert allowed(signed_path(PATH, OLD_SECRET), g)
    assert not allowed(signed_path(PATH, "retired-long-ago"), g)
    assert not allowed(PATH, g)


def test_allowlist_only_mode() -> None:
    g = guard(sizes=["280", "280x194c", "650s"])
    assert not g.expects_signatures
    assert allowed("/recipes/1/280/cups.jpg", g)
    assert allowed("/recipes/1/280x194c/cups.jpg", g)
    # Same size as 650s, but unsigned URLs use the canonical spelling only.
    assert (
        refusal("/recipes/1/650x650/cups.jpg", g)
        == "size '650x650' is allowed unsigned only as '650s'"
    )
    assert refusal("/recipes/1/281/cups.jpg", g) == "size not in the allowlist"
    assert refusal("/recipes/1/280@2x/cups.jpg", g) == "size not in the allowlist"
    assert refusal("/recipes/1/280.webp/cups.jpg", g) == "size not in the allowlist"
    # Without secrets nothing is a signature: a signed URL is just an unknown prefix.
    signed = signed_path("/recipes/1/281/cups.jpg", SECRET)
    assert parse(signed, g).signature is None
    assert not allowed(signed, g)


def test_mixed_mode_signed_urls_and_an_allowlist() -> None:
    g = guard([SECRET], sizes=["280x194c"])
    assert g.expects_signatures
    assert allowed("/recipes/1/280x194c/cups.jpg", g)  # unsigned, allowed size
    assert refusal("/recipes/1/750x500c/cups.jpg", g) == "missing signature"
    assert allowed(signed_path("/recipes/1/750x500c/cups.jpg", SECRET), g)
    # A wrong signature is not excused by an allowed size: the path is then read unsigned,
    # its first segment part of another key.
    bad = signed_path("/recipes/1/280x194c/cups.jpg", "wrong")
    assert g.check(parse(bad, g)).transform.key == bad.split("/")[1] + "/recipes/1/cups.jpg"
    assert refusal(signed_path("/recipes/1/750x500c/cups.jpg", "wrong"), g) == "invalid signature"


def test_dev_mode_is_open_only_without_secret_and_allowlist() -> None:
    assert allowed("/recipes/1/4096x4096cu/cups.jpg", guard(open=True))
    assert not allowed("/recipes/1/280/cups.jpg", guard())  # nothing configured: closed
    assert not allowed("/recipes/1/281/cups.jpg", guard([SECRET], open=True))
    assert not allowed("/recipes/1/281/cups.jpg", guard(sizes=["280"], open=True))


def test_url_for_round_trips_through_parse_path_and_guard() -> None:
    url = url_for("recipes/1203423/5366e857.jpg", "280x194c", SECRET)
    assert url == signed_path(PATH, SECRET)
    parsed = parse(url, guard([SECRET]))
    assert parsed.signature == sign(PATH, SECRET)
    assert parsed.transform == Transform(
        "recipes/1203423/5366e857.jpg", parse_size("280x194c", 4096)
    )
    guard([SECRET, OLD_SECRET]).check(parsed)


def test_url_for_with_base_url_and_unusual_key() -> None:
    key = "user uploads/café/100% real.jpg"
    url = url_for(key, "650s@2x.webp", OLD_SECRET, base_url="https://img.example.com/")
    assert url.startswith("https://img.example.com/")
    path = url.removeprefix("https://img.example.com")
    g = guard([SECRET, OLD_SECRET])
    parsed = parse(path, g)
    assert parsed.transform.key == key
    assert parsed.transform.size == parse_size("1300s.webp", 4096)
    g.check(parsed)


def test_cli_sign_prints_the_signed_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sign", PATH, "--secret", SECRET]) == 0
    out = capsys.readouterr().out.strip()
    assert out == signed_path(PATH, SECRET)
    assert allowed(out, guard([SECRET]))


def test_cli_sign_uses_the_first_secret_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOFU_SECRET", f"{SECRET}\n{OLD_SECRET}\n")
    assert main(["sign", PATH]) == 0
    assert capsys.readouterr().out.strip() == signed_path(PATH, SECRET)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["sign", PATH],
            "give --secret KEY or --secret-file PATH (or TOFU_SECRET), or --thumbor-key",
        ),
        (["sign", PATH.lstrip("/"), "--secret", SECRET], "PATH must start with /"),
    ],
)
def test_cli_sign_refuses_bad_input(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOFU_SECRET", raising=False)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_python_m_tofu_sign() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFU_")}
    result = subprocess.run(
        [sys.executable, "-m", "tofu", "sign", PATH, "--secret", SECRET],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == signed_path(PATH, SECRET) + "\n"
