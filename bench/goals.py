"""Issue 12's targets for the miss path, checked against a comparison's rows: met or missed.

- W1: tofu's req/s at least 1.10x the better of thumbor and sharp, its CPU ms/req at most 0.90x
  the lower of theirs, its worst SSIM at least thumbor's, its CPU ms/req within 1.15x the decode
  floor (bench/floor.py).
- W4: tofu's req/s at least both peers', its peak RSS at most thumbor's, its worst SSIM at
  least thumbor's, its CPU ms/req within 1.15x the floor.

A target whose rows are missing (a server skipped or not selected) is "not measured".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:  # bench.report renders these outcomes
    from bench.report import Row, WorkloadInfo

PEERS = ("thumbor", "sharp")
FLOOR_RATIO = 1.15


@dataclass(frozen=True)
class Outcome:
    workload: str
    target: str
    measured: str
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "not measured"}[self.met]


def _value(row: Row | None, attr: str) -> float | None:
    if row is None or row.skipped is not None:
        return None
    value = getattr(row, attr)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


Check: TypeAlias = "Callable[[dict[str, Row], WorkloadInfo], tuple[str, bool] | None]"


def _rps_vs_best(factor: float) -> Check:
    def check(rows: dict[str, Row], info: WorkloadInfo) -> tuple[str, bool] | None:
        tofu = _value(rows.get("tofu"), "rps")
        peers = [_value(rows.get(p), "rps") for p in PEERS]
        if not tofu or any(not v for v in peers):
            return None
        best = max(v for v in peers if v)
        return f"{tofu:,.1f} vs {best:,.1f} req/s = {tofu / best:.2f}x", tofu >= factor * best

    return check


def _cpu_vs_lowest(factor: float) -> Check:
    def check(rows: dict[str, Row], info: WorkloadInfo) -> tuple[str, bool] | None:
        tofu = _value(rows.get("tofu"), "cpu_ms_per_req")
        peers = [_value(rows.get(p), "cpu_ms_per_req") for p in PEERS]
        if tofu is None or any(v is None for v in peers):
            return None
        low = min(v for v in peers if v is not None)
        return f"{tofu:.2f} vs {low:.2f} ms = {tofu / low:.2f}x", tofu <= factor * low

    return check


def _vs_thumbor(attr: str, spec: str, higher_is_better: bool) -> Check:
    """tofu's ``attr`` against thumbor's, each formatted with ``spec``."""

    def check(rows: dict[str, Row], info: WorkloadInfo) -> tuple[str, bool] | None:
        tofu, thumbor = _value(rows.get("tofu"), attr), _value(rows.get("thumbor"), attr)
        if tofu is None or thumbor is None:
            return None
        met = tofu >= thumbor if higher_is_better else tofu <= thumbor
        return f"{spec.format(tofu)} vs {spec.format(thumbor)}", met

    return check


def _floor(rows: dict[str, Row], info: WorkloadInfo) -> tuple[str, bool] | None:
    tofu = _value(rows.get("tofu"), "cpu_ms_per_req")
    if tofu is None or not info.floor_ms:
        return None
    r = tofu / info.floor_ms
    return f"{tofu:.2f} vs {info.floor_ms:.2f} ms = {r:.2f}x", r <= FLOOR_RATIO


GOALS: dict[str, tuple[tuple[str, Check], ...]] = {
    "W1": (
        ("req/s >= 1.10x the better of thumbor and sharp", _rps_vs_best(1.10)),
        ("CPU ms/req <= 0.90x the lower of thumbor and sharp", _cpu_vs_lowest(0.90)),
        ("worst SSIM >= thumbor's", _vs_thumbor("ssim_worst", "{:.4f}", True)),
        (f"CPU ms/req <= {FLOOR_RATIO:.2f}x the decode floor", _floor),
    ),
    "W4": (
        ("req/s >= both thumbor and sharp", _rps_vs_best(1.0)),
        ("peak RSS <= thumbor's", _vs_thumbor("peak_rss_mb", "{:,.0f} MB", False)),
        ("worst SSIM >= thumbor's", _vs_thumbor("ssim_worst", "{:.4f}", True)),
        (f"CPU ms/req <= {FLOOR_RATIO:.2f}x the decode floor", _floor),
    ),
}


def evaluate(info: WorkloadInfo, rows: Sequence[Row]) -> list[Outcome]:
    """The workload's targets (none for W2, W3) against its rows."""
    by_server = {r.server: r for r in rows if r.workload == info.name}
    out = []
    for target, check in GOALS.get(info.name, ()):
        result = check(by_server, info)
        if result is None:
            out.append(Outcome(info.name, target, "-", None))
        else:
            out.append(Outcome(info.name, target, result[0], result[1]))
    return out


def goals_table(outcomes: Sequence[Outcome]) -> str:
    lines = ["| workload | tofu target | measured | |", "|---|---|---|---|"]
    lines += [f"| {o.workload} | {o.target} | {o.measured} | {o.verdict} |" for o in outcomes]
    return "\n".join(lines)
