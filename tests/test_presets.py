"""Presets (``--preset NAME=SIZE``): the same rendition as the token, ``--presets-only``, the
configuration that defines them and ``tofu config``/``tofu sign`` with them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from tests.support.metrics import metric
from tests.support.servers import SAMPLES
from tofu.cli import main
from tofu.config import Config, ConfigError
from tofu.errors import BadRequest, Forbidden
from tofu.hints import Adapt
from tofu.signing import Guard, sign, url_for
from tofu.urls import parse_path, parse_preset, parse_size, parse_size_spec

SECRET = "preset-test-secret-0123456789abcdef"
PHOTO_KEY = "recipes/1203423/5366e857.jpg"
PRESETS = ("card=280x194c", "hero=600x315cq70@2x", "wide=640w")
MakeClient = Callable[..., Awaitable[TestClient]]


# --- parsing -----------------------------------------------------------------------------------


def test_a_preset_is_the_same_transform_as_its_token() -> None:
    table = Config(origin=(str(SAMPLES),), preset=PRESETS).presets
    by_name = parse_path(
        "/recipes/1/card/a.jpg", max_side=4096, expect_signature=False, presets=table
    )
    by_token = parse_path("/recipes/1/280x194c/a.jpg", max_side=4096, expect_signature=False)
    assert by_name.transform == by_token.transform
    assert by_name.preset == "card" and by_token.preset is None
    hero = parse_path("/r/hero/a.jpg", max_side=4096, expect_signature=False, presets=table)
    assert hero.transform.size == parse_size("1200x630cq70", 4096)
    assert hero.adapt is Adapt.NONE  # its token has an @ DPR: no hint rescales it
    wide = parse_path("/r/wide/a.jpg", max_side=4096, expect_signature=False, presets=table)
    assert wide.adapt is Adapt.WIDTH


def test_without_presets_a_name_is_a_bad_size() -> None:
    with pytest.raises(BadRequest, match="'card' is not a size token"):
        parse_path("/recipes/1/card/a.jpg", max_side=4096, expect_signature=False)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("card", "is not NAME=SIZE"),
        ("=280", "is not NAME=SIZE"),
        ("card=", "is not NAME=SIZE"),
        ("Card=280", "lowercase"),
        ("card/x=280", "lowercase"),
        ("9lives=280", "lowercase"),
        ("x200=280", "reads as a size token"),
        ("info=280", "reads as a size token"),
        ("card=280x194z", "cannot parse"),
        ("card=99999", "larger than the 4096 px limit"),
    ],
)
def test_bad_presets_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_preset(text, 4096)


def test_config_reports_every_bad_preset_one_line_each() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(
            {
                "origin": [str(SAMPLES)],
                "secret": [SECRET],
                "preset": ["card=280x194c", "card=320x220c", "x1=280", "hero=nonsense"],
            },
            {},
        )
    lines = str(caught.value).splitlines()
    assert "--preset: 'card' is defined twice" in lines
    assert any(line.startswith("--preset: preset name 'x1'") for line in lines)
    assert any(line.startswith("--preset: preset 'hero'") for line in lines)
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ({"presets_only": True}, "--presets-only needs at least one --preset"),
        (
            {"presets_only": True, "preset": ["card=280"], "sizes": ["280"]},
            "--sizes with --presets-only",
        ),
    ],
)
def test_presets_only_needs_presets_and_no_allowlist(
    flags: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        Config.load({"origin": [str(SAMPLES)], "secret": [SECRET], **flags}, {})


def test_presets_only_alone_is_a_safe_configuration() -> None:
    config = Config.load(
        {"origin": [str(SAMPLES)], "presets_only": True, "preset": ["card=280x194c"]}, {}
    )
    assert config.presets_only and not config.dev_open


def test_tofu_preset_holds_one_preset_per_line() -> None:
    config = Config.load(
        {"origin": [str(SAMPLES)], "secret": [SECRET]},
        {"TOFU_PRESET": "card=280x194c\r\nhero = 1200x630cq70\n\n", "TOFU_PRESETS_ONLY": "1"},
    )
    assert config.preset == ("card=280x194c", "hero = 1200x630cq70")
    assert {name: p.token for name, p in config.presets.items()} == {
        "card": "280x194c",
        "hero": "1200x630cq70",
    }
    assert config.presets_only


def test_tofu_config_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["config", "--origin", str(SAMPLES), "--secret", SECRET]
    args += ["--preset", "card=280x194c", "--preset", "hero=600x315cq70@2x", "--presets-only"]
    assert main(args) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["preset"] == ["card=280x194c", "hero=600x315cq70@2x"]
    assert described["presets"] == {"card": "280x194c", "hero": "1200x630cq70"}
    assert described["presets_only"] is True


def test_tofu_sign_signs_a_preset_path(capsys: pytest.CaptureFixture[str]) -> None:
    path = "/recipes/1/card/a.jpg"
    assert main(["sign", path, "--secret", SECRET, "--preset", "card=280x194c"]) == 0
    assert capsys.readouterr().out.strip() == f"/{sign(path, SECRET)}{path}"
    # Without the preset defined, the server would refuse the path, and so does sign.
    assert main(["sign", path, "--secret", SECRET]) == 2
    assert "'card' is not a size token" in capsys.readouterr().err


# --- the guard ---------------------------------------------------------------------------------


def check(path: str, guard: Guard, signed: bool = False) -> str:
    """The key served for ``path`` (signed with SECRET if ``signed``), or the refusal."""
    table = Config(origin=(str(SAMPLES),), preset=PRESETS).presets
    if signed:
        path = f"/{sign(path, SECRET)}{path}"
    parsed = parse_path(
        path, max_side=4096, expect_signature=guard.expects_signatures, presets=table
    )
    try:
        return str(guard.check(parsed).transform.key)
    except Forbidden as exc:
        return f"403 {exc.reason}"


def test_presets_only_serves_presets_unsigned_and_nothing_else() -> None:
    guard = Guard([SECRET], [], presets_only=True)
    assert check("/r/1/card/a.jpg", guard) == "r/1/a.jpg"
    assert check("/r/1/card/a.jpg", guard, signed=True) == "r/1/a.jpg"
    for token in ("280x194c", "280", "info"):
        refusal = check(f"/r/1/{token}/a.jpg", guard)
        assert refusal.startswith(f"403 size '{token}' is not a preset"), refusal
        assert check(f"/r/1/{token}/a.jpg", guard, signed=True) == refusal
    assert check("/r/1/%63ard/a.jpg", guard) == "403 preset '%63ard' is served only as 'card'"


def test_without_presets_only_a_preset_url_is_signed_or_allowlisted() -> None:
    signed = Guard([SECRET], [])
    assert check("/r/1/card/a.jpg", signed, signed=True) == "r/1/a.jpg"
    assert check("/r/1/card/a.jpg", signed) == "403 missing signature"
    allowlisted = Guard([], [parse_size_spec("280x194c", 4096)])
    assert check("/r/1/card/a.jpg", allowlisted) == "r/1/a.jpg"
    assert check("/r/1/280x194c/a.jpg", allowlisted) == "r/1/a.jpg"
    assert check("/r/1/hero/a.jpg", allowlisted) == "403 size not in the allowlist"


# --- over HTTP ---------------------------------------------------------------------------------


async def test_a_preset_and_its_token_are_one_cache_entry(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), secret=(SECRET,), preset=PRESETS)
    by_token = await client.get(url_for(PHOTO_KEY, "280x194c", SECRET))
    by_name = await client.get(url_for(PHOTO_KEY, "card", SECRET))
    assert by_token.status == by_name.status == 200
    assert await by_token.read() == await by_name.read()
    assert by_name.headers["ETag"] == by_token.headers["ETag"]
    exposition = await (await client.get("/metrics")).text()
    assert metric(exposition, "tofu_renders_total") == 1
    assert metric(exposition, "tofu_cache_hits_total", 'cache="result"') == 1


async def test_presets_only_over_http(make_client: MakeClient) -> None:
    client = await make_client(
        origin=(str(SAMPLES),), secret=(SECRET,), preset=PRESETS, presets_only=True
    )
    unsigned = await client.get("/recipes/1203423/card/5366e857.jpg")
    assert unsigned.status == 200 and unsigned.content_type == "image/jpeg"
    for url in (
        "/recipes/1203423/280x194c/5366e857.jpg",
        url_for(PHOTO_KEY, "280x194c", SECRET),
        url_for(PHOTO_KEY, "1600", SECRET),
    ):
        refused = await client.get(url)
        assert refused.status == 403, url
        reason = await refused.text()
        assert reason.count("\n") == 1 and "only presets are served" in reason
