"""Originals from a directory: nothing outside the root is ever read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tofu.config import Config
from tofu.errors import NotFound, Unprocessable
from tofu.metrics import Metrics
from tofu.origins import open_origin
from tofu.origins.disk import DiskOrigin

from .support.servers import SAMPLES

SECRET_CONTENT = b"outside the root"


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """``tmp_path/root`` is the origin; ``tmp_path/outside`` holds what must stay unreachable."""
    root = tmp_path / "root"
    (root / "recipes" / "1").mkdir(parents=True)
    (root / "recipes" / "1" / "photo.jpg").write_bytes(b"photo bytes")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jpg").write_bytes(SECRET_CONTENT)
    (tmp_path / "root-sibling").mkdir()  # shares the root's name as a string prefix
    (tmp_path / "root-sibling" / "x.jpg").write_bytes(SECRET_CONTENT)
    return root


def origin(root: Path, max_bytes: int = 1 << 20) -> DiskOrigin:
    return DiskOrigin(str(root), max_bytes=max_bytes)


async def test_reads_a_file_under_the_root(layout: Path) -> None:
    original = await origin(layout).fetch("recipes/1/photo.jpg")
    assert original.data == b"photo bytes"
    assert original.version
    assert original.last_modified == pytest.approx(
        (layout / "recipes" / "1" / "photo.jpg").stat().st_mtime
    )


@pytest.mark.parametrize(
    "key",
    [
        "../outside/secret.jpg",
        "recipes/../../outside/secret.jpg",
        "recipes/1/../../../outside/secret.jpg",
        "..",
        ".",
        "",
        "recipes/..",
        "../root-sibling/x.jpg",
        "/etc/passwd",
        "/etc/hostname",
        "//etc/passwd",
        "recipes/1/missing.jpg",
        "recipes/1",  # a directory
        "recipes/1/photo.jpg/more",
        "recipes/1/photo.jpg\x00.png",
        "x" * 300 + ".jpg",  # longer than any file name may be
        "a/" * 3000 + "b.jpg",  # longer than any path may be
    ],
)
async def test_keys_that_escape_or_miss_are_not_found(layout: Path, key: str) -> None:
    with pytest.raises(NotFound):
        await origin(layout).fetch(key)


async def test_absolute_path_to_a_real_file_outside_is_not_found(layout: Path) -> None:
    outside = layout.parent / "outside" / "secret.jpg"
    with pytest.raises(NotFound):
        await origin(layout).fetch(str(outside))


async def test_symlink_pointing_outside_the_root_is_not_followed(layout: Path) -> None:
    (layout / "leak.jpg").symlink_to(layout.parent / "outside" / "secret.jpg")
    (layout / "leakdir").symlink_to(layout.parent / "outside", target_is_directory=True)
    (layout / "rootlink").symlink_to(layout, target_is_directory=True)
    for key in ("leak.jpg", "leakdir/secret.jpg", "rootlink"):
        with pytest.raises(NotFound):
            await origin(layout).fetch(key)


async def test_symlink_inside_the_root_is_fine(layout: Path) -> None:
    (layout / "alias.jpg").symlink_to(layout / "recipes" / "1" / "photo.jpg")
    (layout / "latest").symlink_to(Path("recipes") / "1", target_is_directory=True)
    o = origin(layout)
    assert (await o.fetch("alias.jpg")).data == b"photo bytes"
    assert (await o.fetch("latest/photo.jpg")).data == b"photo bytes"
    # ".." is refused even when it would stay inside: one key rule for parsers and origins.
    with pytest.raises(NotFound):
        await o.fetch("recipes/../recipes/1/photo.jpg")


async def test_root_given_through_a_symlink_still_confines(tmp_path: Path, layout: Path) -> None:
    link = tmp_path / "root-link"
    link.symlink_to(layout, target_is_directory=True)
    o = origin(link)
    assert (await o.fetch("recipes/1/photo.jpg")).data == b"photo bytes"
    with pytest.raises(NotFound):
        await o.fetch("../outside/secret.jpg")


async def test_files_over_max_bytes_are_unprocessable(layout: Path) -> None:
    (layout / "big.jpg").write_bytes(b"x" * 1001)
    (layout / "fits.jpg").write_bytes(b"x" * 1000)
    o = origin(layout, max_bytes=1000)
    assert len((await o.fetch("fits.jpg")).data) == 1000
    with pytest.raises(Unprocessable, match="1001 bytes, over the 1000 limit"):
        await o.fetch("big.jpg")


async def test_version_changes_when_the_file_changes(layout: Path) -> None:
    path = layout / "recipes" / "1" / "photo.jpg"
    o = origin(layout)
    first = await o.fetch("recipes/1/photo.jpg")
    assert (await o.fetch("recipes/1/photo.jpg")).version == first.version  # stable

    stat = path.stat()
    path.write_bytes(b"new photo bytes")  # another size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    resized = await o.fetch("recipes/1/photo.jpg")
    assert resized.data == b"new photo bytes"
    assert resized.version != first.version

    path.write_bytes(b"NEW PHOTO BYTES")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # newer
    touched = await o.fetch("recipes/1/photo.jpg")
    assert touched.version not in (first.version, resized.version)


async def test_check_reports_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    o = origin(root)
    await o.check()
    root.rmdir()
    with pytest.raises(OSError):
        await o.check()
    await o.close()


async def test_config_opens_a_disk_origin_for_a_directory() -> None:
    o = open_origin(Config(origin=(str(SAMPLES),), dev=True), Metrics())
    original = await o.fetch("recipes/1203423/5366e857.jpg")
    assert original.data[:3] == b"\xff\xd8\xff"
    await o.close()
