"""One ``Key`` type: the original's key, validated once where either URL grammar parses it, and
checked by the same rule where an origin turns it into a path, a URL or an object name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.s3 import FakeS3, s3_env
from tofu.errors import BadRequest, NotFound
from tofu.frontends.thumbor import parse_options
from tofu.keys import Key, key_problem, origin_key, parse_key
from tofu.origins.disk import DiskOrigin
from tofu.origins.http import key_path
from tofu.origins.routing import RoutedOrigin
from tofu.origins.s3 import S3Origin
from tofu.peers import decode_rendition, encode_rendition
from tofu.transform import Size, Transform
from tofu.urls import parse_path

VALID = ["a.jpg", "recipes/1/x.jpg", ".well/...jpg", "my photos/café.jpg", "a b/100% real?.png"]
INVALID = ["", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "../etc/passwd", "a\\b", "a\x00b"]


@pytest.mark.parametrize("text", VALID)
def test_valid_keys(text: str) -> None:
    assert key_problem(text) is None
    key = Key(text)
    assert key == text and isinstance(key, str)
    assert parse_key(text) == origin_key(text) == key


@pytest.mark.parametrize("text", INVALID)
def test_invalid_keys_fail_alike_everywhere(text: str) -> None:
    assert key_problem(text) is not None
    with pytest.raises(ValueError):
        Key(text)
    with pytest.raises(BadRequest, match="key has"):
        parse_key(text)
    with pytest.raises(NotFound):
        origin_key(text)


def test_both_grammars_make_keys() -> None:
    tofu = parse_path("/recipes/1/280/x.jpg", max_side=4096, expect_signature=False)
    thumbor = parse_options("300x0/recipes%2F1%2Fx.jpg", max_side=4096)
    assert type(tofu.transform.key) is Key and type(thumbor.key) is Key
    assert tofu.transform.key == thumbor.key == "recipes/1/x.jpg"
    # The same rule, the same reason, whichever grammar.
    for parse in (
        lambda: parse_path("/recipes/../280/x.jpg", max_side=4096, expect_signature=False),
        lambda: parse_options("300x0/recipes/../x.jpg", max_side=4096),
    ):
        with pytest.raises(BadRequest, match="key has an empty or dot segment"):
            parse()


def test_a_sibling_workers_key_is_checked_by_the_same_rule() -> None:
    good = encode_rendition(Transform(Key("a/b.jpg"), Size(100, None)), None)
    transform, _ = decode_rendition(good)
    assert type(transform.key) is Key and transform.key == "a/b.jpg"
    document = json.loads(good)
    document["transform"]["key"] = "a/../../b.jpg"
    with pytest.raises(ValueError, match="dot segment"):
        decode_rendition(json.dumps(document).encode())


def test_routing_hands_each_origin_a_key() -> None:
    disk = DiskOrigin("/", max_bytes=1)
    origin, key = RoutedOrigin([("recipes/", disk)]).route("recipes/1/x.jpg")
    assert origin is disk and type(key) is Key and key == "1/x.jpg"


@pytest.mark.parametrize("text", INVALID)
async def test_every_origin_refuses_what_is_not_a_key(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_s3: FakeS3
) -> None:
    with pytest.raises(NotFound):
        await DiskOrigin(str(tmp_path), max_bytes=1 << 20).fetch(text)
    with pytest.raises(NotFound):
        key_path(text)
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    s3 = S3Origin(
        "fake",
        "originals/",
        endpoint_url=fake_s3.endpoint_url,
        timeout=5.0,
        retries=0,
        max_bytes=1 << 20,
        pool_size=1,
    )
    try:
        with pytest.raises(NotFound):
            await s3.fetch(text)
    finally:
        await s3.close()
    assert not [r for r in fake_s3.requests if r[0] == "GET"], fake_s3.requests  # never asked
