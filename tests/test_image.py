"""The container image proven: deploy/Dockerfile built with podman and run (issue 16 item 5).

Selected only by ``make test-image`` (``pytest -m image``; the default run deselects the
``image`` marker): building takes a minute or more. Skipped, with the reason, where podman
cannot run a container; tests/support/podman.py says how podman is set up without changing the
machine's configuration.

Every container runs with the host's network on a free port of 127.0.0.1, over originals
mounted read-only, and is removed by its ID at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyvips

from tests.support.metrics import samples
from tests.support.podman import Podman, PodmanError, dockerfile_base
from tests.support.servers import SAMPLES, free_port

pytestmark = pytest.mark.image

IMAGE = "localhost/tofu:image-test"
ORIGINALS = "/srv/originals"  # where the originals directory is mounted in the container
RENDITION = "/recipes/1/280x194c/cups.jpg"
RENDITION_SIZE = (280, 194)
START_TIMEOUT = 60.0

# The disk result tier's interface (issue 16 item 2), the one place naming it: a directory
# (here a volume) and a size, and a counter of disk hits on /metrics: a counter named for hits
# that says "disk" in its name (tofu_disk_cache_hits_total) or in a label
# (tofu_tier_hits_total{tier="disk"}).
DISK_CACHE_DIR = "/var/cache/tofu"  # created by deploy/Dockerfile, owned by the runtime user


def disk_cache_args(directory: str) -> list[str]:
    return ["--disk-cache", directory, "--disk-cache-size", "64MB"]


def disk_hits(exposition: str) -> float:
    return sum(
        value
        for name, labels, value in samples(exposition)
        if name.endswith("_total")
        and "hit" in name
        and ("disk" in name or "disk" in labels.values())
    )


def renders(exposition: str) -> float:
    return sum(value for name, _, value in samples(exposition) if name == "tofu_renders_total")


# --- podman, the image, containers ----------------------------------------------------------


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    executable = shutil.which("podman")
    if executable is None:
        pytest.skip("podman is not installed (make test-image installs it)")
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (make test-image installs it)")
    tool = Podman(executable)
    base = dockerfile_base()
    try:
        if not tool.image_exists(base.name):
            tool.build_stand_in_base(base)
        # Can podman run a container here at all? Try, rather than guess from the kernel.
        tried = tool(
            "run",
            "--rm",
            "--network=host",
            base.name,
            "python",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
            check=False,
        )
    except PodmanError as error:
        pytest.skip(f"podman cannot store or import an image here: {error}")
    if tried.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {tried.stderr.strip()[-500:]}")
    assert tried.stdout.strip() == base.python, (
        f"{base.name} has Python {tried.stdout.strip()}, deploy/Dockerfile wants {base.python}: "
        f"remove the stand-in (podman rmi) so that it is made again"
    )
    with tool.session():
        yield tool


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    podman.build(IMAGE)
    return IMAGE


@dataclass
class Container:
    podman: Podman
    id: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def running(self) -> bool:
        return self.podman.state(self.id, "{{.State.Running}}") == "true"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running():
                break
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the container did not become ready:\n{self.podman.logs(self.id)}")

    def exit_code(self) -> int:
        return int(self.podman.state(self.id, "{{.State.ExitCode}}"))


def start(
    podman: Podman,
    image: str,
    originals: Path,
    *args: str,
    volumes: tuple[str, ...] = (),
) -> Container:
    port = free_port()
    options = [
        "--network=host",
        f"--volume={originals}:{ORIGINALS}:ro",
        *(f"--volume={v}" for v in volumes),
        # By the environment, as deploy/ does: the image's HEALTHCHECK reads TOFU_PORT.
        "--env=TOFU_HOST=127.0.0.1",
        f"--env=TOFU_PORT={port}",
    ]
    container_id = podman.run_detached(
        image, "--origin", ORIGINALS, "--dev", *args, options=options
    )
    container = Container(podman, container_id, port)
    container.wait_ready()
    return container


def assert_rendition(container: Container) -> bytes:
    status, headers, body = container.get(RENDITION)
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "image/jpeg"
    decoded = pyvips.Image.new_from_buffer(body, "")
    assert (decoded.width, decoded.height) == RENDITION_SIZE
    assert decoded.get("vips-loader") == "jpegload_buffer"
    return body


def stop(container: Container, grace: int) -> None:
    """``podman stop``: the image's STOPSIGNAL, then SIGKILL after ``grace`` seconds."""
    container.podman("stop", "--time", str(grace), container.id, timeout=grace + 60)


# --- the tests ------------------------------------------------------------------------------


def test_image_serves_renditions_health_and_readiness(podman: Podman, image: str) -> None:
    container = start(podman, image, SAMPLES)
    assert container.get("/healthz")[:1] == (200,)
    assert container.get("/readyz")[:1] == (200,)
    assert_rendition(container)
    # The image's HEALTHCHECK itself (kept by --format=docker), run inside the container.
    health = podman("healthcheck", "run", container.id, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    # tofu runs as the image's numeric non-root user.
    uid = podman("exec", container.id, "python", "-c", "import os; print(os.getuid())")
    assert uid.stdout.strip() == "10001"


def test_sigterm_drains_then_exits_cleanly_within_the_drain_time(
    podman: Podman, image: str
) -> None:
    drain, shutdown = 2.0, 5.0
    container = start(
        podman,
        image,
        SAMPLES,
        "--drain-seconds",
        str(drain),
        "--shutdown-timeout",
        str(shutdown),
    )
    assert_rendition(container)
    grace = drain + shutdown + 30  # SIGKILL only long after tofu should have gone
    started = time.monotonic()
    stopping = subprocess.Popen(
        podman.command("stop", "--time", str(int(grace)), container.id),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=podman.env(),
    )
    try:
        # During the drain: not ready any more, still alive and serving.
        readiness = [200]
        while readiness[-1] == 200 and time.monotonic() - started < drain:
            readiness.append(container.get("/readyz")[0])
        assert readiness[-1] == 503, f"/readyz during the drain: {readiness}"
        assert container.get("/healthz")[0] == 200
        assert_rendition(container)
        stopping.wait(timeout=grace + 60)
    finally:
        if stopping.poll() is None:
            stopping.kill()
            stopping.wait()
    took = time.monotonic() - started
    assert stopping.returncode == 0, stopping.stderr.read() if stopping.stderr else ""
    assert container.exit_code() == 0, podman.logs(container.id)
    # Exited on its own (drain + shutdown, nothing in flight), long before the SIGKILL.
    assert took < drain + shutdown + 10, f"took {took:.1f}s:\n{podman.logs(container.id)}"


def test_the_disk_cache_directory_belongs_to_the_runtime_user(podman: Podman, image: str) -> None:
    """Docker gives a new named volume the owner of the image's directory it is mounted on
    (root when the image has none), so the image must have that directory, owned by its
    non-root user. (podman would chown a new volume to the user anyway: the image is checked.)"""
    probe = (
        f"import os, pathlib; d = pathlib.Path({DISK_CACHE_DIR!r}); "
        "(d / 'probe').write_bytes(b'x'); "
        "print(d.stat().st_uid, d.stat().st_gid, os.getuid(), os.getgid())"
    )
    checked = podman(
        "run", "--rm", "--network=none", "--entrypoint=python", image, "-c", probe, check=False
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    owner_uid, owner_gid, uid, gid = checked.stdout.split()
    assert (owner_uid, owner_gid) == (uid, gid) == ("10001", "10001")


def test_restarted_container_serves_from_the_disk_tier_on_a_volume(
    podman: Podman, image: str, tmp_path: Path
) -> None:
    """Needs the disk result tier (issue 16 item 2): the second container has no originals at
    all, so the rendition can only come from the volume the first one wrote."""
    originals = tmp_path / "originals"
    (originals / "recipes" / "1").mkdir(parents=True)
    shutil.copy(SAMPLES / "recipes" / "1" / "cups.jpg", originals / "recipes" / "1")
    volume = podman.create_volume()
    cache = (f"{volume}:{DISK_CACHE_DIR}",)

    no_drain = ("--drain-seconds", "0")  # nothing balances onto it
    first = start(
        podman, image, originals, *disk_cache_args(DISK_CACHE_DIR), *no_drain, volumes=cache
    )
    rendered = assert_rendition(first)
    stop(first, grace=30)
    assert first.exit_code() == 0, podman.logs(first.id)

    empty = tmp_path / "no-originals"
    empty.mkdir()
    second = start(podman, image, empty, *disk_cache_args(DISK_CACHE_DIR), volumes=cache)
    assert assert_rendition(second) == rendered
    metrics = second.get("/metrics")[2].decode()
    assert renders(metrics) == 0, "rendered again instead of reading the disk tier"
    assert disk_hits(metrics) >= 1, podman.logs(second.id)
