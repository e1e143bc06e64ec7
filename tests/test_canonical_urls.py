"""Canonical size tokens: one spelling per size for unsigned URLs (issue 8, finding 9), and a
signature-shaped first segment of an unsigned URL (finding 15)."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from tofu.config import Config, ConfigError
from tofu.errors import Forbidden
from tofu.signing import Guard, sign, signed_path
from tofu.transform import Fit, Gravity, ImageFormat, Size
from tofu.urls import parse_path, parse_size, parse_size_spec, size_token

from .support.servers import SAMPLES

MAX_SIDE = 4096
SECRET = "canonical-test-secret-0123456789abcdef"
PHOTO = SAMPLES / "recipes" / "1203423" / "5366e857.jpg"
# A key whose first segment is 43 URL-safe base64 characters, like a signature.
SIGNATURE_LIKE = "wqzEUwaL_GVURSUitJj3COO1bcNqTGNlvfqrJo_Jpn0"
MakeClient = Callable[..., Awaitable[TestClient]]


# --- size_token -------------------------------------------------------------------------------

CANONICAL = {
    Size(280, None): "280",
    Size(None, 200): "x200",
    Size(650, 650): "650s",
    Size(894, 1461): "894x1461s",
    Size(40, 40, Fit.COVER): "40c",
    Size(280, 194, Fit.COVER): "280x194c",
    Size(280, 194, Fit.COVER, Gravity.ATTENTION): "280x194a",
    Size(280, 194, Fit.COVER, Gravity.FOCAL, focal=(30, 60)): "280x194f30-60",
    Size(750, 500, Fit.COVER, quality=60): "750x500cq60",
    Size(280, None, upscale=True): "280u",
    Size(280, None, format=ImageFormat.JPEG): "280.jpg",
    Size(280, 194, Fit.COVER, quality=60, format=ImageFormat.WEBP, upscale=True): (
        "280x194cq60u.webp"
    ),
}


@pytest.mark.parametrize(("size", "token"), CANONICAL.items())
def test_size_token_is_the_canonical_spelling(size: Size, token: str) -> None:
    assert size_token(size) == token
    assert parse_size(token, MAX_SIDE) == size


# Every spelling the grammar allows, aliases included (Cookpad's tokens and tofu's extensions).
TOKENS = [
    *["280", "650s", "894x1461s", "280x194c", "40x40c", "750x500cq60", "x200", "280x194"],
    *["280x194a", "280x194f30-60", "280x194f0-100", "40c", "x40c", "280q1", "280q100", "280u"],
    *["280@2x", "280@1.5x", "x200@2x", "280x194c@2x", "650s@1.5x", "2048@2x", "280@4x"],
    *["280.webp", "280.avif", "280.png", "280.jpeg", "280.jpg", "x40s", "280x194cq60u@2x.webp"],
    *["0280", "280x280", "280x194c@1.0x", "280q5.png", "280.webpq60", "1f50-50"],
]


@pytest.mark.parametrize("token", TOKENS)
def test_every_size_round_trips_through_its_canonical_token(token: str) -> None:
    size = parse_size(token, MAX_SIDE)
    canonical = size_token(size)
    assert parse_size(canonical, MAX_SIDE) == size
    assert size_token(parse_size(canonical, MAX_SIDE)) == canonical


# --- the guard --------------------------------------------------------------------------------


def check(path: str, guard: Guard) -> str:
    """The key served for ``path``, or the refusal's reason."""
    parsed = parse_path(path, max_side=MAX_SIDE, expect_signature=guard.expects_signatures)
    try:
        return guard.check(parsed).transform.key
    except Forbidden as refused:
        return f"refused: {refused.reason}"


ALIASES = [
    ("0280", "280"),
    ("%32%38%30", "280"),
    ("140@2x", "280"),
    ("280@1x", "280"),
    ("280x194c@1.0x", "280x194c"),
    ("280x194cq080", "280x194cq80"),
    ("280x280", "280s"),
    ("280x194.jpeg", "280x194s.jpg"),
    ("0600w", "600w"),
]


@pytest.mark.parametrize(("alias", "canonical"), ALIASES)
@pytest.mark.parametrize("with_secret", [False, True])
def test_unsigned_urls_must_use_the_canonical_spelling(
    alias: str, canonical: str, with_secret: bool
) -> None:
    tokens = ("280", "280x194c", "280x194cq80", "280s", "280x194s.jpg", "600w")
    sizes = [parse_size_spec(t, MAX_SIDE) for t in tokens]
    guard = Guard([SECRET] if with_secret else [], sizes)
    assert check(f"/recipes/1/{canonical}/a.jpg", guard) == "recipes/1/a.jpg"
    reason = check(f"/recipes/1/{alias}/a.jpg", guard)
    assert reason.startswith("refused:") and repr(canonical) in reason


def test_signed_urls_keep_the_spelling_they_were_signed_with() -> None:
    guard = Guard([SECRET], [parse_size_spec("280", MAX_SIDE)])
    for token in ("0280", "140@2x", "280x194c@1.0x"):
        path = f"/recipes/1/{token}/a.jpg"
        assert check(signed_path(path, SECRET), guard) == "recipes/1/a.jpg"


def test_width_hint_sizes_are_allowed_as_listed() -> None:
    # "600w" (width from the Width client hint) is its own allowlist entry, not "600".
    config = Config.load({"origin": str(SAMPLES), "sizes": ["600w,280"]}, {})
    guard = Guard([], config.allowed_sizes)
    assert check("/recipes/1/600w/a.jpg", guard) == "recipes/1/a.jpg"
    assert check("/recipes/1/280/a.jpg", guard) == "recipes/1/a.jpg"
    assert check("/recipes/1/600/a.jpg", guard) == "refused: size not in the allowlist"
    assert check("/recipes/1/280w/a.jpg", guard) == "refused: size not in the allowlist"


def test_dev_mode_accepts_any_spelling() -> None:
    assert check("/recipes/1/0280/a.jpg", Guard([], [], open=True)) == "recipes/1/a.jpg"


def test_allowlist_entries_must_be_canonical() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load({"origin": str(SAMPLES), "sizes": ["280,280x194,0650s,140@2x"]}, {})
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert "'280x194s'" in lines[0] and "'650s'" in lines[1] and "'280'" in lines[2]


def test_signature_shaped_prefix_is_a_key_segment_in_allowlist_mode() -> None:
    path = f"/{SIGNATURE_LIKE}/280/a.jpg"
    expected = f"{SIGNATURE_LIKE}/a.jpg"
    sizes = [parse_size_spec("280", MAX_SIDE)]
    assert check(path, Guard([], sizes)) == expected
    assert check(path, Guard([SECRET], sizes)) == expected  # mixed: not a signature either
    assert check(path, Guard([], [], open=True)) == expected
    # Not an allowed size: the segment was meant as a signature, and it is a wrong one.
    assert check(f"/{SIGNATURE_LIKE}/281/a.jpg", Guard([SECRET], sizes)) == (
        "refused: invalid signature"
    )
    # A real signature still signs the path after it.
    signed = f"/{sign('/280/a.jpg', SECRET)}/280/a.jpg"
    assert check(signed, Guard([SECRET], sizes)) == "a.jpg"


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
def origin_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / SIGNATURE_LIKE).mkdir(parents=True)
    shutil.copy(PHOTO, root / SIGNATURE_LIKE / "photo.jpg")
    (root / "recipes").mkdir()
    shutil.copy(PHOTO, root / "recipes" / "photo.jpg")
    return root


@pytest.mark.parametrize("secret", [(), (SECRET,)])
async def test_http_canonical_spelling_and_signature_shaped_keys(
    make_client: MakeClient, origin_root: Path, secret: tuple[str, ...]
) -> None:
    client = await make_client(origin=(str(origin_root),), sizes=("280", "280x194c"), secret=secret)
    assert (await client.get("/recipes/280/photo.jpg")).status == 200
    for alias in ("0280", "%32%38%30", "140@2x"):
        # encoded=True: sent as written (yarl would decode %32%38%30 into 280)
        refused = await client.get(URL(f"/recipes/{alias}/photo.jpg", encoded=True))
        assert refused.status == 403
        assert "'280'" in await refused.text()
    refused = await client.get("/recipes/280x194c@1.0x/photo.jpg")
    assert refused.status == 403 and "'280x194c'" in await refused.text()
    assert (await client.get(f"/{SIGNATURE_LIKE}/280/photo.jpg")).status == 200
