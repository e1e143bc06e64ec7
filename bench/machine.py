"""What the numbers were measured on: cores, CPU model, memory and software versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or "unknown"
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "Hardware", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def memory_bytes(meminfo: str | None = None) -> int:
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return 0
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_info() -> dict[str, str | int]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "memory_gib": round(memory_bytes() / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def tofu_versions() -> dict[str, str]:
    import pyvips

    import tofu

    libvips = ".".join(str(pyvips.version(i)) for i in range(3))
    return {
        "tofu": getattr(tofu, "__version__", "unknown"),
        "pyvips": pyvips.__version__,
        "libvips": libvips,
    }
