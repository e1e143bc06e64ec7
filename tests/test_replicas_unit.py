"""``Replicas`` in process, over scripted sources: the breaker's cooldown and probe, failover
of a silent primary within the deadline, hedging (a hedged 404, the budget), the probe of each
source. Counts only."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.metrics import metric
from tofu.errors import NotFound, OriginError
from tofu.health import OriginProbe
from tofu.metrics import Metrics
from tofu.origins import Original
from tofu.origins import replicas as replicas_module
from tofu.origins.policy import first_byte
from tofu.origins.replicas import Hedging, Replicas

ORIGINAL = Original(b"data", "v1")


class Scripted:
    """A source that fails, stalls, answers or says 404 as told (at once, or after ``slow``
    seconds without a first byte), counting fetches and the answers it completed."""

    def __init__(self, behaviour: str = "ok", slow: float = 0.0) -> None:
        self.behaviour = behaviour
        self.slow = slow
        self.fetches = 0
        self.answered = 0
        self.healthy = True

    async def fetch(self, key: str) -> Original:
        self.fetches += 1
        await asyncio.sleep(self.slow)
        self.answered += 1
        if self.behaviour == "fail":
            raise OriginError("scripted failure")
        if self.behaviour == "stall":
            await asyncio.sleep(3600)
        if self.behaviour == "missing":
            raise NotFound("scripted 404")
        if self.behaviour == "slow_body":  # headers at once, then a slow body
            first_byte()
            await asyncio.sleep(0.3)
        return ORIGINAL

    async def check(self) -> None:
        if not self.healthy:
            raise OSError("down")

    async def close(self) -> None:
        return None


def replicas(
    *sources: Scripted,
    deadline: float = 5.0,
    hedge_after: float = 0,
    budget: float = 1.0,
    metrics: Metrics | None = None,
) -> Replicas:
    return Replicas(
        "r/",
        [(f"s{n}", source) for n, source in enumerate(sources)],
        deadline=deadline,
        hedging=Hedging(hedge_after, budget),
        metrics=metrics or Metrics(),
    )


def hedges(metrics: Metrics, outcome: str) -> float:
    text = metrics.exposition().decode()
    return metric(text, "tofu_origin_hedges_total", f'origin="r/",outcome="{outcome}"')


async def test_breaker_opens_then_probes_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicas_module, "_COOLDOWN", 0.2)
    primary, replica = Scripted("fail"), Scripted()
    origin = replicas(primary, replica)
    for _ in range(7):
        assert await origin.fetch("k") == ORIGINAL
    assert primary.fetches == 5  # open after five failures in a row
    await asyncio.sleep(0.25)
    assert await origin.fetch("k") == ORIGINAL
    assert primary.fetches == 6  # probed after the cooldown, failed: open again at once
    assert await origin.fetch("k") == ORIGINAL
    assert primary.fetches == 6
    primary.behaviour = "ok"
    await asyncio.sleep(0.25)
    await origin.fetch("k")
    await origin.fetch("k")
    assert primary.fetches == 8  # the probe succeeded: closed
    assert replica.fetches == 9  # 7, the failed probe, the one skipped after it


async def test_every_source_open_is_tried_anyway() -> None:
    only = Scripted("fail")
    origin = replicas(only, Scripted("fail"))
    for _ in range(6):
        with pytest.raises(OriginError):
            await origin.fetch("k")
    assert only.fetches == 6


async def test_silent_primary_leaves_the_replica_its_share() -> None:
    primary, replica = Scripted("stall"), Scripted()
    origin = replicas(primary, replica, deadline=0.4)
    assert await origin.fetch("k") == ORIGINAL
    assert (primary.fetches, replica.fetches) == (1, 1)


async def test_primary_404_is_final_even_when_hedged() -> None:
    """A slow primary is hedged to the replica; its 404, arriving first, ends the fetch (the
    replica may lag): the replica's answer is not waited for."""
    primary, replica = Scripted("missing", slow=0.1), Scripted(slow=1.0)
    metrics = Metrics()
    with pytest.raises(NotFound):
        await replicas(primary, replica, hedge_after=0.01, metrics=metrics).fetch("k")
    assert replica.fetches == 1  # the hedge was sent
    assert replica.answered == 0  # and cancelled, not waited for
    assert hedges(metrics, "lost") == 1


async def test_a_budget_of_ten_percent_earns_one_hedge_in_ten_fetches() -> None:
    primary, replica = Scripted(), Scripted()
    metrics = Metrics()
    origin = replicas(primary, replica, hedge_after=0.01, budget=0.1, metrics=metrics)
    for _ in range(9):
        await origin.fetch("k")
    primary.slow = 0.2
    assert await origin.fetch("k") == ORIGINAL  # the tenth fetch has earned a whole hedge
    assert replica.fetches == 1 and hedges(metrics, "won") == 1
    assert await origin.fetch("k") == ORIGINAL  # and spent it
    assert replica.fetches == 1 and hedges(metrics, "over_budget") == 1


async def test_the_probe_reports_each_source_apart() -> None:
    primary, replica = Scripted(), Scripted()
    primary.healthy = False
    metrics = Metrics()
    probe = OriginProbe(replicas(primary, replica), metrics)
    assert [s.up for s in probe.states] == [None, None]  # not probed yet
    states = await probe.fresh_states()
    assert [(s.origin, s.source, s.up) for s in states] == [("r/", "s0", False), ("r/", "s1", True)]
    assert "down" in states[0].detail
    up = {
        tuple(sample.labels.values()): sample.value
        for family in metrics.origin_up.collect()
        for sample in family.samples
    }
    assert up == {("r/", "s0"): 0.0, ("r/", "s1"): 1.0}


async def test_a_slow_body_is_not_hedged_silent_headers_are() -> None:
    """The hedge delay runs to the first byte: an answer under way is not hedged."""
    primary, replica = Scripted("slow_body"), Scripted()
    assert await replicas(primary, replica, hedge_after=0.02).fetch("k") == ORIGINAL
    assert replica.fetches == 0
    primary.behaviour = "stall"
    assert await replicas(primary, replica, hedge_after=0.02).fetch("k") == ORIGINAL
    assert replica.fetches == 1
