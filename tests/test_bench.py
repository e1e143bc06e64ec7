"""Unit tests of the bench tools, and W5 run for a second per server on the samples. sharp
(bench/sharp_server.js) is installed by ``make test`` with npm before pytest runs, thumbor by
``bench.servers.ensure_thumbor`` on first use."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from bench import metrics
from bench.floor import decode_floor, decode_ms
from bench.goals import evaluate, goals_table
from bench.machine import cpu_model, memory_bytes
from bench.mix import (
    DEFAULT_SIZE_MIX,
    ZipfSampler,
    format_size_mix,
    in_turn,
    keys_from_dir,
    parse_size_mix,
    popularity_summary,
    request_mix,
    tofu_paths,
    zipf_weights,
)
from bench.procs import linear_slope, parse_stat
from bench.quality import Scorer, differing_dims, references, score
from bench.report import Ratios, Row, WorkloadInfo, ratios, render_markdown, workload_table
from bench.servers import SHARP_DIR, start_sharp
from bench.soak import slopes_mb_per_min
from bench.targets import Kind, path_for
from bench.units import (
    parse_duration,
    parse_duration_or_zero,
    parse_per_workload,
    short_run_warning,
)
from bench.workloads import CHROMIUM_ACCEPT, WORKLOADS, Origin, quality_pairs, select
from bench.wrk import RESULT_MARKER, WrkError, WrkRun, lua_script, parse_result, read_progress
from tofu.render import RenderSettings, render
from tofu.render.steps import plan, probe
from tofu.signing import Guard
from tofu.urls import parse_path, parse_size

# --- the mix ------------------------------------------------------------------------------


def test_default_size_mix_is_valid_tofu_tokens_with_weights_summing_to_one() -> None:
    assert math.isclose(sum(w for _, w in DEFAULT_SIZE_MIX), 1.0)
    for token, _ in DEFAULT_SIZE_MIX:
        parse_size(token, 4096)
    round_trip = parse_size_mix(format_size_mix(DEFAULT_SIZE_MIX))
    assert [t for t, _ in round_trip] == [t for t, _ in DEFAULT_SIZE_MIX]
    assert [w for _, w in round_trip] == pytest.approx([w for _, w in DEFAULT_SIZE_MIX])


def test_parse_size_mix_normalises_and_defaults_weight_one() -> None:
    assert parse_size_mix("280:3, 650s") == [("280", 0.75), ("650s", 0.25)]
    with pytest.raises(ValueError):
        parse_size_mix("280:0")
    with pytest.raises(ValueError):
        parse_size_mix("280:-1")


def test_zipf_weights_follow_the_law() -> None:
    w = zipf_weights(100, 1.2)
    assert math.isclose(sum(w), 1.0)
    assert w[0] / w[9] == pytest.approx(10**1.2)
    assert all(a > b for a, b in itertools.pairwise(w))
    assert zipf_weights(5, 0.0) == pytest.approx([0.2] * 5)  # s=0 is uniform


def test_zipf_sampling_is_deterministic_with_a_seed() -> None:
    import random

    sampler = ZipfSampler(50, 1.0)
    a = sampler.sample(1000, random.Random(7))
    b = sampler.sample(1000, random.Random(7))
    c = sampler.sample(1000, random.Random(8))
    assert a == b
    assert a != c
    assert min(a) >= 0 and max(a) < 50


def test_zipf_sampling_has_the_expected_shape() -> None:
    import random

    n, s, count = 200, 1.0, 40_000
    counts = Counter(ZipfSampler(n, s).sample(count, random.Random(1)))
    expected = zipf_weights(n, s)
    for rank in range(5):  # the head, within 5 % relative (about 4 standard errors)
        assert counts[rank] / count == pytest.approx(expected[rank], rel=0.05)
    head = sum(counts[r] for r in range(10)) / count
    assert head == pytest.approx(sum(expected[:10]), abs=0.01)
    assert counts[0] > counts[1] > counts[4] > counts[50]


def test_request_mix_is_deterministic_and_uses_every_size() -> None:
    keys = [f"recipes/{i}/photo.jpg" for i in range(200)]
    a = request_mix(keys, DEFAULT_SIZE_MIX, 5000, s=1.0, seed=3)
    assert a == request_mix(keys, DEFAULT_SIZE_MIX, 5000, s=1.0, seed=3)
    assert a != request_mix(keys, DEFAULT_SIZE_MIX, 5000, s=1.0, seed=4)
    tokens = Counter(t for _, t in a)
    assert set(tokens) == {t for t, _ in DEFAULT_SIZE_MIX}
    assert tokens["280"] / 5000 == pytest.approx(0.15, abs=0.03)
    # The most popular key is not simply the first one by name.
    top = Counter(k for k, _ in a).most_common(1)[0][0]
    assert top in keys
    shape = popularity_summary(a)
    assert 0.1 < shape["top1_share"] < 0.3  # Zipf(1) over 200: 1/H(200) ~ 0.17
    assert shape["keys"] <= 200


def test_in_turn_cycles_keys() -> None:
    assert in_turn(["a.jpg", "b.jpg"], "512s", 5) == [
        ("a.jpg", "512s"),
        ("b.jpg", "512s"),
        ("a.jpg", "512s"),
        ("b.jpg", "512s"),
        ("a.jpg", "512s"),
    ]


def test_tofu_paths_unsigned_and_signed_parse_and_verify() -> None:
    pairs = [("recipes/1/a b.jpg", "280x194c@2x")]
    (plain,) = tofu_paths(pairs)
    assert plain == "/recipes/1/280x194c%402x/a%20b.jpg"
    (signed,) = tofu_paths(pairs, "s3cret")
    parsed = parse_path(signed, max_side=4096, expect_signature=True)
    assert parsed.transform.key == "recipes/1/a b.jpg"
    Guard(["s3cret"], []).check(parsed)  # raises Forbidden if the signature were wrong


def test_keys_from_dir(tmp_path: Path) -> None:
    (tmp_path / "recipes" / "1").mkdir(parents=True)
    (tmp_path / "recipes" / "1" / "a.jpg").write_bytes(b"x")
    (tmp_path / "logo.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert keys_from_dir(tmp_path) == ["logo.PNG", "recipes/1/a.jpg"]
    with pytest.raises(ValueError):
        keys_from_dir(tmp_path / "recipes" / "missing")


# --- per-server URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "token", "expected"),
    [
        (Kind.TOFU, "512s", "/src/512s/a.jpg"),
        (Kind.THUMBOR, "512s", "/unsafe/fit-in/512x512/filters:quality(80):no_upscale()/src/a.jpg"),
        (Kind.THUMBOR, "280", "/unsafe/280x0/filters:quality(80):no_upscale()/src/a.jpg"),
        (
            Kind.THUMBOR,
            "750x500cq60@2x",
            "/unsafe/1500x1000/filters:quality(60):no_upscale()/src/a.jpg",
        ),
        (Kind.NGINX, "512s", "/resize/512/512/80/src/a.jpg"),
        (Kind.NGINX, "280@2x", "/resize/560/-/80/src/a.jpg"),
        (Kind.NGINX, "280x194c", "/crop/280/194/80/src/a.jpg"),
        (Kind.CEILING, "280x194c", "/280/194/1/80/src/a.jpg"),
        (Kind.CEILING, "650s", "/650/650/0/80/src/a.jpg"),
        (Kind.SHARP, "512s", "/512/512/0/80/src/a.jpg"),
        (Kind.SHARP, "280@2x", "/560/0/0/80/src/a.jpg"),
        (Kind.STATIC, "650s", "/rendition.jpg"),
    ],
)
def test_path_for_each_server(kind: Kind, token: str, expected: str) -> None:
    assert path_for(kind, "src/a.jpg", token) == expected


def test_select_servers_by_name_or_family() -> None:
    names = WORKLOADS["W2"].servers
    assert select(names, ["tofu"]) == ["tofu", "tofu-percore"]
    assert select(names, ["tofu-percore", "ceiling"]) == ["tofu-percore", "ceiling"]
    assert select(names, ["nginx"]) == ["nginx-if", "nginx-if-cache"]
    assert select(names, None) == list(names)


# --- wrk ----------------------------------------------------------------------------------


def _wrk_output(threads: object, **overrides: object) -> str:
    data = {
        "duration_us": 2_000_000,
        "requests": 300,
        "bytes": 9_000_000,
        "errors": {"connect": 0, "read": 1, "write": 0, "status": 20, "timeout": 2},
        "latency_us": {
            "min": 500,
            "max": 90_000,
            "mean": 4000.5,
            "stdev": 100,
            "percentiles": {"50": 3000, "90": 8000, "99": 40_000, "99.9": 80_000},
        },
        "threads": threads,
        **overrides,
    }
    return "Running 2s test @ http://x\n  2 threads\n" + RESULT_MARKER + json.dumps(data) + "\n"


def test_parse_result_sums_threads_and_converts_units() -> None:
    threads = {
        "1": {"statuses": {"200": 150, "404": 10}, "body_bytes": 150_000, "ok": 150},
        "2": {"statuses": {"200": 130, "503": 10}, "body_bytes": 130_000, "ok": 130},
    }
    result = parse_result(_wrk_output(threads))
    assert result.duration_s == 2.0
    assert result.rps == 150.0
    assert result.statuses == {200: 280, 404: 10, 503: 10}
    assert result.errors == 20 + 3  # non-2xx plus socket errors (read 1 + timeout 2)
    assert result.mean_body_bytes == 1000.0
    assert result.latency_ms["p50"] == 3.0
    assert result.latency_ms["p99.9"] == 80.0
    assert result.latency_ms["max"] == 90.0
    assert json.loads(json.dumps(result.to_dict()))["statuses"]["200"] == 280


def test_parse_result_with_no_thread_data_and_no_requests() -> None:
    output = _wrk_output(
        [],
        requests=0,
        latency_us={"min": None, "max": 0, "mean": None, "percentiles": {"50": 0}},
    )
    result = parse_result(output)
    assert result.requests == 0 and result.rps == 0
    assert math.isnan(result.latency_ms["p50"])
    assert result.mean_body_bytes == 0


def test_parse_result_uses_thread_time_after_a_request_quota() -> None:
    threads = {"1": {"statuses": {"200": 300}, "ok": 300, "active_ms": 500}}
    assert parse_result(_wrk_output(threads)).duration_s == 0.5


def test_parse_result_without_marker_or_bad_json_raises() -> None:
    with pytest.raises(WrkError):
        parse_result("Running 1s test\nsome error\n")
    with pytest.raises(WrkError):
        parse_result(RESULT_MARKER + "{not json\n")


def test_lua_script_paces_only_when_asked() -> None:
    assert "function delay()" in lua_script(paced=True)
    paced = lua_script(paced=False)
    assert "function delay()" not in paced
    for hook in ("function setup(", "function init(", "function request(", "function done("):
        assert hook in paced
    assert "%" not in paced.replace("%q", "").replace("%s", "").replace("%.17g", "").replace(
        "pos % n", ""
    )


def test_wrk_command_line(tmp_path: Path) -> None:
    run = WrkRun(
        "http://127.0.0.1:9/",
        ["/a"],
        duration_s=2.5,
        connections=16,
        threads=4,
        requests=1000,
        rate=100,
        headers={"Accept": "image/webp"},
    )
    cmd = run.command(tmp_path / "s.lua", tmp_path / "p.txt", tmp_path)
    assert cmd[:5] == ["wrk", "-t4", "-c16", "-d3s", "--timeout=30s"]
    assert cmd[7:9] == ["-H", "Accept: image/webp"]
    url_at = cmd.index("http://127.0.0.1:9/")
    assert cmd[url_at + 1 :] == ["--", str(tmp_path / "p.txt"), "4", str(tmp_path), "100", "250"]


def test_wrk_base_url_path_becomes_a_prefix() -> None:
    run = WrkRun("https://cdn.example:8443/img/", ["/a"])
    assert (run.origin, run.prefix) == ("https://cdn.example:8443", "/img")
    assert WrkRun("http://127.0.0.1:9", ["/a"]).prefix == ""


def test_read_progress_sums_threads_and_skips_partial_files(tmp_path: Path) -> None:
    (tmp_path / "0").write_text("10 9 900\n")
    (tmp_path / "1").write_text("5 5 500\n")
    (tmp_path / "2").write_text("")  # being rewritten
    progress = read_progress(tmp_path, 1.5)
    assert (progress.responses, progress.ok, progress.body_bytes) == (15, 14, 1400)


# --- metrics ------------------------------------------------------------------------------

EXPOSITION = """\
# HELP tofu_cache_hits_total cache hits
# TYPE tofu_cache_hits_total counter
tofu_cache_hits_total{cache="result"} 90.0
tofu_cache_hits_total{cache="original"} 7.0
tofu_cache_misses_total{cache="result"} 10.0
tofu_renders_total 12.0
tofu_origin_fetches_total 3.0
tofu_requests_total{cache="hit",status="200"} 90.0
tofu_requests_total{cache="miss",status="200"} 10.0
weird_metric{label="a \\"quoted\\" value"} 1.5 1700000000000
not a sample line
"""


def test_parse_exposition_and_value() -> None:
    samples = metrics.parse_exposition(EXPOSITION)
    assert metrics.value(samples, "tofu_cache_hits_total", cache="result") == 90
    assert metrics.value(samples, "tofu_requests_total") == 100  # summed over labels
    assert metrics.value(samples, "weird_metric", label='a "quoted" value') == 1.5
    assert metrics.value(samples, "absent") == 0


def test_cache_delta_hit_ratio_and_restart_clamp() -> None:
    before = metrics.parse_exposition(EXPOSITION)
    after = metrics.parse_exposition(
        EXPOSITION.replace('result"} 90.0', 'result"} 390.0')
        .replace('misses_total{cache="result"} 10.0', 'misses_total{cache="result"} 110.0')
        .replace("tofu_renders_total 12.0", "tofu_renders_total 112.0")
    )
    delta = metrics.cache_delta(before, after)
    assert (delta.hits, delta.misses, delta.renders) == (300, 100, 100)
    assert delta.hit_ratio == 0.75
    assert metrics.cache_delta(after, before).hits == 0  # a restart does not go negative
    assert math.isnan(metrics.cache_delta(before, before).hit_ratio)


# --- procs, units, soak -----------------------------------------------------------------------


def test_parse_stat_handles_spaces_in_the_name() -> None:
    fields = ["S", "1", "4242", "4242"] + ["0"] * 7 + ["100", "50", "7", "3"] + ["0"] * 6
    fields += ["2560"] + ["0"] * 20  # rss (field 24) in pages
    stat = parse_stat("4243 (tofu worker (1)) " + " ".join(fields))
    assert (stat.pid, stat.ppid, stat.pgrp, stat.name) == (4243, 1, 4242, "tofu worker (1)")
    import os

    assert stat.cpu_seconds == pytest.approx(160 / os.sysconf("SC_CLK_TCK"))
    assert stat.rss_bytes == 2560 * os.sysconf("SC_PAGE_SIZE")


def test_linear_slope_and_soak_slopes() -> None:
    assert linear_slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert linear_slope([(1, 1)]) == 0
    mb = 1 << 20
    # pid 1 grows 1 MB per 6 s (10 MB/min) in the second half; pid 2 is flat.
    series = [(float(t), {1: (100 + t // 6) * mb, 2: 50 * mb}) for t in range(0, 121, 6)]
    slopes = slopes_mb_per_min(series)
    assert slopes["1"] == pytest.approx(10)
    assert slopes["2"] == pytest.approx(0)
    assert slopes["total"] == pytest.approx(10)


def test_units() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("2m") == 120
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1.5") == 1.5
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_duration("0")
    assert parse_duration_or_zero("0") == 0
    assert parse_per_workload("w1=20s, W3=5s", parse_duration) == {"W1": 20, "W3": 5}
    with pytest.raises(ValueError):
        parse_per_workload("W1")


def test_machine_info_parsing() -> None:
    assert cpu_model("processor : 0\nmodel name\t: Fancy CPU @ 3GHz\n") == "Fancy CPU @ 3GHz"
    assert memory_bytes("MemTotal:       2048 kB\nMemFree: 1 kB\n") == 2048 * 1024


# --- report -------------------------------------------------------------------------------


def _rows() -> list[Row]:
    return [
        Row("W1", "tofu", rps=60, p50_ms=100, p99_ms=300, cpu_ms_per_req=30, peak_rss_mb=300,
            mean_bytes=24_000, requests=600, hit_ratio=0.0, renders=600),
        Row("W1", "thumbor", rps=20, p50_ms=400, p99_ms=900, cpu_ms_per_req=90, peak_rss_mb=200,
            mean_bytes=25_000, requests=200, errors=2, statuses={"200": 198, "500": 2}),
        Row("W1", "ceiling", rps=80, p50_ms=90, p99_ms=200, cpu_ms_per_req=24, peak_rss_mb=250,
            mean_bytes=30_000, requests=800),
        Row("W1", "nginx-if", skipped="did not start (no nginx)"),
    ]  # fmt: skip


def test_ratios_against_thumbor_and_ceiling() -> None:
    r = ratios(_rows(), "thumbor", "ceiling")
    assert r["tofu"].rps_vs_base == pytest.approx(3.0)
    assert r["tofu"].rps_vs_ref == pytest.approx(0.75)
    assert r["tofu"].cpu_vs_base == pytest.approx(1 / 3)
    assert r["tofu"].rps_vs_peer is None  # no peer named
    assert r["ceiling"].rps_vs_ref == pytest.approx(1.0)
    assert r["nginx-if"] == Ratios()
    assert ratios(_rows(), "absent", "ceiling")["tofu"].rps_vs_base is None


def test_workload_table_renders_rows_ratios_and_notes() -> None:
    info = WorkloadInfo("W1", "miss path", 30, 8, "thumbor", "ceiling")
    table = workload_table(info, _rows())
    lines = table.splitlines()
    assert lines[0].startswith("| server | req/s | p50 ms | p99 ms | CPU ms/req")
    assert "req/s vs thumbor" in lines[0] and "req/s vs ceiling" in lines[0]
    tofu = next(line for line in lines if line.startswith("| tofu |"))
    assert "| 60.0 |" in tofu and "| 3.00x | 0.75x | 0.33x |" in tofu
    assert any(line.startswith("| nginx-if | skipped: did not start") for line in lines)
    assert "- thumbor: statuses 200: 198, 500: 2" in table
    assert "- tofu: result-cache hit ratio 0.0%; 1.00 renders per response" in table
    # every table row has the header's column count
    assert {line.count("|") for line in lines if line.startswith("|")} == {13}


def test_render_markdown_round_trips_json() -> None:
    results = {
        "meta": {
            "date": "2025-01-01 12:00",
            "machine": {"nproc": 2, "cpu": "Test CPU", "memory_gib": 24},
            "versions": {"tofu": "0.1.0", "nginx": "1.22.1"},
            "command": "python -m bench.compare --only W1",
        },
        "workloads": [WorkloadInfo("W1", "miss path", 30, 8, "thumbor", "ceiling").__dict__],
        "rows": [r.to_dict() for r in _rows()],
        "charts": ["compare-x-throughput.png"],
    }
    text = render_markdown(json.loads(json.dumps(results, allow_nan=False)))
    assert text.startswith("# tofu comparison — 2025-01-01 12:00")
    assert "2 cores, Test CPU, 24 GiB RAM" in text
    assert "tofu 0.1.0, nginx 1.22.1" in text
    assert "## W1 — miss path" in text
    assert "![compare-x-throughput](compare-x-throughput.png)" in text
    assert Row.from_dict(_rows()[3].to_dict()).skipped == "did not start (no nginx)"


def _miss_rows(**tofu: float) -> list[Row]:
    """tofu, thumbor and sharp on W1; ``tofu`` overrides the tofu row's fields."""
    return [
        dataclasses.replace(
            Row("W1", "tofu", rps=66, cpu_ms_per_req=20, peak_rss_mb=300, requests=600,
                ssim_worst=0.95, ssim_mean=0.97, dims={"src/a.jpg 512s": "512x341"},
                chroma=["4:2:0"]),
            **tofu,
        ),
        Row("W1", "thumbor", rps=20, cpu_ms_per_req=90, peak_rss_mb=200, requests=200,
            ssim_worst=0.94, ssim_mean=0.96, dims={"src/a.jpg 512s": "512x341"},
            chroma=["4:2:0"]),
        Row("W1", "sharp", rps=30, cpu_ms_per_req=25, peak_rss_mb=350, requests=300,
            ssim_worst=0.95, ssim_mean=0.97, dims={"src/a.jpg 512s": "512x344"},
            chroma=["4:4:4"]),
    ]  # fmt: skip


def _miss_info(name: str = "W1", floor_ms: float | None = 18.0) -> WorkloadInfo:
    return WorkloadInfo(
        name, "miss path", 30, 8, "thumbor", "ceiling", peer="sharp", floor_ms=floor_ms,
        floor_note="18.00 ms per photo over 1 photos (DCT scale 3/8 x1)",
    )  # fmt: skip


def test_workload_table_has_sharp_ratios_ssim_floor_and_flags_dims() -> None:
    table = workload_table(_miss_info(), _miss_rows())
    lines = table.splitlines()
    assert "| SSIM worst / mean |" in lines[0]
    assert "| req/s vs sharp |" in lines[0] and "| CPU/req vs sharp |" in lines[0]
    tofu = next(line for line in lines if line.startswith("| tofu |"))
    # req/s vs thumbor, vs sharp, vs ceiling (absent), CPU vs thumbor, vs sharp
    assert "| 0.950 / 0.970 | 0 | 3.30x | 2.20x | - | 0.22x | 0.80x |" in tofu
    sharp = next(line for line in lines if line.startswith("| sharp |"))
    assert "0.950 / 0.970 (dims!)" in sharp
    assert "(dims!)" not in next(line for line in lines if line.startswith("| thumbor |"))
    assert "- sharp: output dimensions differ from tofu's by more than 1px on 1 of 1" in table
    assert "src/a.jpg 512s: 512x344 vs tofu 512x341" in table
    assert "chroma subsampling 4:4:4 (tofu 4:2:0)" in table
    assert "18.00 ms per photo" in table and "tofu's CPU ms/req is 1.11x it" in table
    assert {line.count("|") for line in lines if line.startswith("|")} == {15}


def test_differing_dims_tolerates_one_pixel() -> None:
    tofu = {"a 512s": "512x341", "b 512s": "341x512", "c 512s": "512x300"}
    theirs = {"a 512s": "511x342", "b 512s": "343x512", "d 512s": "1x1"}
    assert differing_dims(theirs, tofu) == ["b 512s: 343x512 vs tofu 341x512"]


def test_goals_met_missed_and_not_measured() -> None:
    outcomes = evaluate(_miss_info(), _miss_rows())
    verdicts = {o.target: o.verdict for o in outcomes}
    assert verdicts == {
        "req/s >= 1.10x the better of thumbor and sharp": "met",  # 66 vs 30
        "CPU ms/req <= 0.90x the lower of thumbor and sharp": "met",  # 20 vs 25
        "worst SSIM >= thumbor's": "met",
        "CPU ms/req <= 1.15x the decode floor": "met",  # 20 / 18 = 1.11
    }
    slower = {o.target: o for o in evaluate(_miss_info(), _miss_rows(rps=32, cpu_ms_per_req=23))}
    assert slower["req/s >= 1.10x the better of thumbor and sharp"].verdict == "missed"
    assert slower["CPU ms/req <= 0.90x the lower of thumbor and sharp"].verdict == "missed"
    assert slower["CPU ms/req <= 1.15x the decode floor"].measured == "23.00 vs 18.00 ms = 1.28x"
    no_sharp = [r for r in _miss_rows() if r.server != "sharp"]
    partial = {o.target: o.verdict for o in evaluate(_miss_info(floor_ms=None), no_sharp)}
    assert partial["req/s >= 1.10x the better of thumbor and sharp"] == "not measured"
    assert partial["CPU ms/req <= 1.15x the decode floor"] == "not measured"
    assert partial["worst SSIM >= thumbor's"] == "met"
    w4 = [dataclasses.replace(r, workload="W4") for r in _miss_rows()]
    w4_verdicts = {o.target: o.verdict for o in evaluate(_miss_info("W4"), w4)}
    assert w4_verdicts["req/s >= both thumbor and sharp"] == "met"
    assert w4_verdicts["peak RSS <= thumbor's"] == "missed"  # 300 vs 200 MB
    assert evaluate(WorkloadInfo("W2", "mix", 60, 16, "thumbor", "ceiling"), _rows()) == []
    assert "| W1 | req/s >= 1.10x the better of thumbor and sharp | 66.0 vs 30.0" in goals_table(
        outcomes
    )


def test_render_markdown_lists_targets() -> None:
    results = {
        "meta": {"date": "2025-01-01 12:00"},
        "workloads": [_miss_info().__dict__],
        "rows": [r.to_dict() for r in _miss_rows()],
    }
    text = render_markdown(json.loads(json.dumps(results, allow_nan=False)))
    assert "## Targets\n" in text and "issue" not in text
    assert "| W1 | worst SSIM >= thumbor's | 0.9500 vs 0.9400 | met |" in text
    assert Row.from_dict(_miss_rows()[2].to_dict()).dims == {"src/a.jpg 512s": "512x344"}
    assert "too short to rank servers" not in text  # 30 s, W1's default


def test_short_runs_warn_that_they_cannot_rank_servers() -> None:
    assert short_run_warning(30, 30) is None
    assert short_run_warning(60, 60) is None
    assert short_run_warning(20, 20) is None  # W3's default: many requests a second
    assert "too short to rank servers" in (short_run_warning(29, 30) or "")
    assert "too short to rank servers" in (short_run_warning(5, 20) or "")
    short = dataclasses.replace(_miss_info(), duration_s=5.0)
    results = {
        "meta": {"date": "2025-01-01 12:00"},
        "workloads": [short.__dict__],
        "rows": [r.to_dict() for r in _miss_rows()],
    }
    text = render_markdown(json.loads(json.dumps(results, allow_nan=False)))
    assert "**Warning**: 5 s per server (default 30 s) is too short to rank servers" in text


def test_quality_pairs_cover_every_photo_once_per_size() -> None:
    origin = Origin(Path("/o"), ["src/a.jpg", "src/b.jpg"], ["src/big.jpg"])
    assert quality_pairs("W1", origin) == [("src/a.jpg", "512s"), ("src/b.jpg", "512s")]
    assert quality_pairs("W4", origin) == [("src/big.jpg", "512s")]
    sizes = [("280", 0.5), ("280x194c", 0.5)]
    assert len(quality_pairs("W2", origin, sizes=sizes)) == 4
    assert quality_pairs("W3", origin, w3_token_="400x266c") == [("src/a.jpg", "400x266c")]
    for name in ("W1", "W2", "W4"):
        assert "sharp" in WORKLOADS[name].servers and WORKLOADS[name].peer == "sharp"


# --- quality and floor --------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "recipes" / "1" / "cups.jpg"


def _texture() -> bytes:
    """A lossless 96x64 image with fine detail (PNG), for SSIM on synthetic pixels."""
    import pyvips

    noise = pyvips.Image.gaussnoise(96, 64, sigma=40, mean=128).cast("uchar")
    return noise.bandjoin([noise.rot180(), noise.flip("horizontal")]).pngsave_buffer()


def test_ssim_is_one_for_identical_pixels_and_lower_for_a_blurred_image() -> None:
    import pyvips

    body = _texture()
    original = references(body, 96, 64, crop=False)  # same size: the pixels themselves
    assert len(original) == 1
    same = score(body, lambda w, h: original)
    assert (same.width, same.height, same.chroma) == (96, 64, "")
    assert same.ssim == pytest.approx(1.0)
    blurred = pyvips.Image.new_from_buffer(body, "").gaussblur(1.5).pngsave_buffer()
    assert score(blurred, lambda w, h: original).ssim < 0.8


def test_reference_is_resized_to_the_exact_output_dimensions() -> None:
    data = SAMPLE.read_bytes()
    out = render(data, parse_size("512s", 4096), RenderSettings())
    (ref,) = references(data, out.width, out.height, crop=False)
    assert ref.shape == (out.height, out.width, 3)
    scored = score(out.body, lambda w, h: references(data, w, h, crop=False))
    assert scored.chroma == "4:2:0"
    assert 0.9 < scored.ssim < 1.0


def test_a_crop_scores_against_both_centres_of_an_odd_margin() -> None:
    import pyvips

    body = pyvips.Image.new_from_buffer(_texture(), "").crop(0, 0, 95, 64).pngsave_buffer()
    centres = references(body, 92, 64, crop=True)  # a margin of 3: offset 1 or 2
    assert len(centres) == 2 and all(c.shape == (64, 92, 3) for c in centres)
    texture = pyvips.Image.new_from_buffer(body, "")
    for left in (1, 2):  # libvips' rounding, sharp's
        cropped = texture.crop(left, 0, 92, 64).pngsave_buffer()
        assert score(cropped, lambda w, h: centres).ssim == pytest.approx(1.0)
    assert score(texture.crop(0, 0, 92, 64).pngsave_buffer(), lambda w, h: centres).ssim < 0.5
    assert len(references(body, 93, 64, crop=True)) == 1  # an even margin has one centre


def test_decode_floor_uses_tofus_dct_scale() -> None:
    data = SAMPLE.read_bytes()
    settings = RenderSettings()
    expected = plan(probe(data, settings), parse_size("280", 4096), settings).decode_scale
    ms, m = decode_ms(data, "280", repeat=2)
    assert ms > 0 and m == expected < 8
    floor = decode_floor([data, _texture()], "280", repeat=2)  # the PNG is left out
    assert floor is not None and floor.photos == 1 and floor.scales == {f"{m}/8": 1}
    assert decode_floor([_texture()], "280") is None


def test_sharp_server_serves_a_resize_like_tofus(tmp_path: Path) -> None:
    assert (SHARP_DIR / "node_modules" / "sharp" / "package.json").exists(), (
        "sharp is not installed: `make test` installs it (bench.servers.ensure_sharp)"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "cups.jpg").write_bytes(SAMPLE.read_bytes())
    tofu = render(SAMPLE.read_bytes(), parse_size("512s", 4096), RenderSettings())
    running = start_sharp("sharp", tmp_path, tmp_path, workers=1)
    try:
        pairs = [("src/cups.jpg", "512s"), ("src/cups.jpg", "280x194c")]
        quality = Scorer(tmp_path).run(
            running.url, pairs, lambda key, token: path_for(Kind.SHARP, key, token)
        )
        missing = Scorer(tmp_path).run(
            running.url, [("src/absent.jpg", "512s")], lambda k, t: path_for(Kind.SHARP, k, t)
        )
    finally:
        running.stop()
    assert quality.failures == []
    assert differing_dims(quality.dims, {"src/cups.jpg 512s": f"{tofu.width}x{tofu.height}"}) == []
    assert quality.dims["src/cups.jpg 280x194c"] == "280x194"
    assert quality.chroma == ["4:2:0"]
    assert quality.worst is not None and 0.9 < quality.worst < 1.0
    assert missing.failures == ["src/absent.jpg 512s: HTTP 404"] and missing.worst is None


# --- W5, the browser workload, for real and short --------------------------------------------


def test_w5_runs_short_on_the_samples(tmp_path: Path) -> None:
    """tofu, tofu --auto-quality, thumbor (AUTO_AVIF; the family brings thumbor-webp) and sharp
    at tofu's settings, two seconds each with Chromium's Accept: each answers AVIF (thumbor-webp
    WebP), with a score; tofu's per-format rows."""
    from bench import compare

    assert (SHARP_DIR / "node_modules" / "sharp" / "package.json").exists(), (
        "sharp is not installed: `make test` installs it (bench.servers.ensure_sharp)"
    )
    servers = ("tofu", "tofu-auto", "thumbor", "sharp-matched")
    args = ["--only", "W5", "--photos", str(SAMPLE.parent.parent), "--servers", ",".join(servers)]
    args += ["--duration", "2s", "--warmup", "0", "--connections", "2", "--keys", "6"]
    args += ["--sizes", "280x194c,650s:1"]
    args += ["--format-repeat", "1", "--out", str(tmp_path), "--tag", "w5"]
    assert compare.main(args) == 0
    results = json.loads((tmp_path / "w5.json").read_text())
    rows = {r["server"]: r for r in results["rows"] if r["workload"] == "W5"}
    assert set(rows) == {*servers, "thumbor-webp"}
    for name, row in rows.items():
        assert row["skipped"] is None, (name, row["skipped"])
        assert row["requests"] > 0 and row["errors"] == 0, (name, row["statuses"])
        assert row["mean_bytes"] > 0 and row["cpu_ms_per_req"] > 0 and row["peak_rss_mb"] > 0
        expected = "image/webp" if name == "thumbor-webp" else "image/avif"
        assert set(row["formats"]) == {expected}, (name, row["formats"])
        assert 0.5 < row["ssim_worst"] <= row["ssim_mean"] < 1, name
        assert 0 < row["ssimulacra2_worst"] <= row["ssimulacra2_mean"] < 100, name
    (info,) = results["workloads"]
    assert info["accept"] == CHROMIUM_ACCEPT
    assert [r["format"] for r in info["per_format"]] == ["jpeg", "webp", "avif"]
    report = (tmp_path / "w5.md").read_text()
    assert "## W5" in report and "| tofu, format |" in report
    assert "| SSIMULACRA 2 worst / mean |" in report
