"""CPU time and memory of a server's whole process tree, read from /proc.

A server under test is started in its own session, so its process group id is its pid and every
worker it forks or spawns (tofu workers, nginx workers, thumbor's forks, multiprocessing's
resource tracker) belongs to the group.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    pgrp: int
    cpu_seconds: float  # utime + stime + cutime + cstime (reaped children's time included)
    rss_bytes: int
    name: str


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name is in parentheses and may contain spaces."""
    left, _, rest = text.rpartition(")")
    pid_text, _, name = left.partition(" (")
    fields = rest.split()
    # fields[0] is field 3 (state); utime is field 14, rss field 24 (man 5 proc).
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ProcStat(
        pid=int(pid_text),
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        cpu_seconds=ticks / _TICKS,
        rss_bytes=int(fields[21]) * _PAGE,
        name=name,
    )


def group_stats(pgid: int) -> list[ProcStat]:
    """Every live process in process group ``pgid``."""
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        if stat.pgrp == pgid:
            out.append(stat)
    return out


def group_cpu_seconds(pgid: int) -> float:
    return sum(s.cpu_seconds for s in group_stats(pgid))


@dataclass
class RssSampler:
    """Samples the RSS of every process of a group every ``interval`` seconds in a thread.

    ``series`` holds (seconds since start, {pid: rss bytes}); ``peak_bytes`` is the largest sum
    over the group's processes seen (shared pages count once per process, as ``ps`` does).
    """

    pgid: int
    interval: float = 0.2
    series: list[tuple[float, dict[int, int]]] = field(default_factory=list)
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def sample(self) -> dict[int, int]:
        now = {s.pid: s.rss_bytes for s in group_stats(self.pgid)}
        self.series.append((time.monotonic() - self._started, now))
        self.peak_bytes = max(self.peak_bytes, sum(now.values()))
        return now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def linear_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def settle(
    pgid: int, *, idle_cores: float = 0.05, step: float = 0.25, timeout: float = 15.0
) -> float:
    """Wait until the group uses less than ``idle_cores`` of CPU (work queued by an earlier
    load has drained); returns the seconds waited."""
    started = time.monotonic()
    last = group_cpu_seconds(pgid)
    while time.monotonic() - started < timeout:
        time.sleep(step)
        now = group_cpu_seconds(pgid)
        if now - last < idle_cores * step:
            break
        last = now
    return time.monotonic() - started
