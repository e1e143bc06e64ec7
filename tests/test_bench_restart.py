"""``bench.restart`` at a tiny duration, so that it cannot rot: two real nodes restarted,
with the disk tier and without, and wrk replaying the mix (Debian's wrk, `make system-deps`)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import restart
from tests.support.servers import SAMPLES


def test_restart_bench_runs_and_the_disk_tier_spares_the_renders(tmp_path: Path) -> None:
    out = tmp_path / "restart.json"
    args = ["--photos", str(SAMPLES), "--names", "1", "--warm", "2s", "--after", "1s"]
    assert restart.main([*args, "--workers", "1", "--concurrency", "4", "--json", str(out)]) == 0
    passes = {(p["variant"], p["when"]): p for p in json.loads(out.read_text())}
    assert set(passes) == {
        (variant, when)
        for variant in ("disk tier", "memory only")
        for when in ("cold start", "after restart")
    }
    assert all(p["responses"] > 0 and p["errors"] == 0 for p in passes.values())
    with_tier = passes[("disk tier", "after restart")]
    without = passes[("memory only", "after restart")]
    assert with_tier["answered"]["disk"] > 0
    assert with_tier["renders"] < without["renders"]
