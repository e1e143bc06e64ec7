"""podman for the image test (tests/test_image.py, ``make test-image``): builds and runs
deploy/Dockerfile without a Docker daemon and without touching the machine's container setup.

- Configuration: tests/support/containers.conf via ``CONTAINERS_CONF`` (runc, no default
  rlimits, cgroupfs, events in a file).
- Storage: images and layers under ``~/.cache/tofu/podman`` (kept, so that the stand-in base
  and the build's layers are reused by the next run), run state under the temp directory.
- The base image of deploy/Dockerfile (``python:X.Y-slim-SUITE``) cannot be pulled here: a
  stand-in made with mmdebstrap (Debian SUITE minbase with python3, python3-venv,
  ca-certificates, python-is-python3) is imported under its name.
- The build reaches PyPI the way this machine does: host network, the host's CA bundle and
  /etc/pip.conf mounted read-only into the build's RUN steps.

Containers are removed by the IDs podman gave when they were created, volumes by the names
created here (unique per run), never by a pattern.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import ROOT

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tofu" / "podman"
RUN_STATE = Path(tempfile.gettempdir()) / f"tofu-podman-{os.getuid()}"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STAND_IN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "python-is-python3")
# Where pip looks for its site-wide configuration, and the CA bundle it names (host paths,
# mounted at the same paths into the build).
PIP_CONF = Path("/etc/pip.conf")


class PodmanError(RuntimeError):
    pass


@dataclass(frozen=True)
class BaseImage:
    """The base named by deploy/Dockerfile's FROM lines: ``python:{python}-slim-{suite}``."""

    python: str
    suite: str

    @property
    def name(self) -> str:
        return f"docker.io/library/python:{self.python}-slim-{self.suite}"


def dockerfile_base() -> BaseImage:
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    bases = {
        line.split()[1].replace("${PYTHON_VERSION}", args.get("PYTHON_VERSION", ""))
        for line in text.splitlines()
        if line.startswith("FROM ")
    }
    (base,) = bases  # both stages start from the same base
    match = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", base)
    if not match:
        raise ValueError(f"deploy/Dockerfile's base {base!r} is not python:X.Y-slim-SUITE")
    return BaseImage(match[1], match[2])


@dataclass
class Podman:
    executable: str
    storage: Path = CACHE
    run_state: Path = RUN_STATE
    created_containers: list[str] = field(default_factory=list)
    created_volumes: list[str] = field(default_factory=list)

    def command(self, *args: str | Path) -> list[str]:
        return [
            self.executable,
            "--root",
            str(self.storage / "storage"),
            "--runroot",
            str(self.run_state / "run"),
            "--tmpdir",
            str(self.run_state / "libpod"),
            "--storage-driver",
            "overlay",
            *(str(a) for a in args),
        ]

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def __call__(
        self, *args: str | Path, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=self.env(),
        )
        if check and result.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(map(str, args[:3]))} failed ({result.returncode}):\n"
                + (result.stdout + result.stderr)[-4000:]
            )
        return result

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def build_stand_in_base(self, base: BaseImage) -> None:
        """mmdebstrap a Debian minbase with the packages a python:X.Y-slim image provides to
        deploy/Dockerfile, and import it under the base's name."""
        mmdebstrap = shutil.which("mmdebstrap")
        assert mmdebstrap, "mmdebstrap is not installed (make test-image installs it)"
        with tempfile.TemporaryDirectory(prefix="tofu-base-") as tmp:
            tarball = Path(tmp) / "base.tar"
            made = subprocess.run(
                [
                    mmdebstrap,
                    "--variant=minbase",
                    f"--include={','.join(STAND_IN_PACKAGES)}",
                    base.suite,
                    str(tarball),
                    DEBIAN_MIRROR,
                ],
                capture_output=True,
                text=True,
                timeout=900,
                stdin=subprocess.DEVNULL,
            )
            assert made.returncode == 0, f"mmdebstrap failed:\n{made.stderr[-4000:]}"
            self(
                "import",
                "--change",
                'CMD ["python"]',
                "--message",
                f"stand-in for {base.name}: Debian {base.suite} minbase "
                f"+ {' '.join(STAND_IN_PACKAGES)} (tests/support/podman.py)",
                tarball,
                base.name,
                timeout=300,
            )

    def build(self, tag: str, context: Path = ROOT, dockerfile: Path = DOCKERFILE) -> None:
        self(
            "build",
            "--pull=never",  # the base is the local stand-in
            "--format=docker",  # keeps HEALTHCHECK (the OCI format has none)
            "--network=host",
            *pip_network_mounts(),
            "--file",
            dockerfile,
            "--tag",
            tag,
            context,
            timeout=1200,
        )

    def run_detached(self, image: str, *args: str | Path, options: Sequence[str] = ()) -> str:
        """``podman run -d``; the container's ID, removed by :meth:`remove_created`."""
        container = self("run", "--detach", *options, image, *args).stdout.strip()
        self.created_containers.append(container)
        return container

    def create_volume(self) -> str:
        name = f"tofu-test-{os.getpid()}-{time.monotonic_ns()}"
        self("volume", "create", name)
        self.created_volumes.append(name)
        return name

    def state(self, container: str, template: str) -> str:
        return self("inspect", "--format", template, container).stdout.strip()

    def logs(self, container: str) -> str:
        result = self("logs", container, check=False)
        return result.stdout + result.stderr

    def remove_created(self) -> None:
        for container in reversed(self.created_containers):
            self("rm", "--force", "--time", "0", container, check=False)
        self.created_containers.clear()
        for volume in reversed(self.created_volumes):
            self("volume", "rm", "--force", volume, check=False)
        self.created_volumes.clear()

    @contextmanager
    def session(self) -> Iterator[Podman]:
        try:
            yield self
        finally:
            self.remove_created()


def pip_network_mounts() -> list[str]:
    """``--volume`` options giving the build's pip this machine's way to PyPI: the CA bundle
    (a TLS-inspecting proxy's CA may be in it) and the site-wide pip.conf that points at it."""
    bundle = Path(
        os.environ.get("SSL_CERT_FILE")
        or ssl.get_default_verify_paths().cafile
        or "/etc/ssl/certs/ca-certificates.crt"
    )
    mounts = []
    if bundle.is_file():
        mounts.append(f"--volume={bundle}:/etc/ssl/certs/ca-certificates.crt:ro")
    if PIP_CONF.is_file():
        mounts.append(f"--volume={PIP_CONF}:{PIP_CONF}:ro")
    return mounts
