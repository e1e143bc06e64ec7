"""Reading Prometheus text expositions in tests (prometheus-client's own parser)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of an exposition as (name, labels, value)."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _labels(spec: str) -> dict[str, str]:
    """``'cache="miss",status="200"'`` -> {"cache": "miss", "status": "200"}."""
    if not spec:
        return {}
    parsed = samples(f"x{{{spec}}} 0\n")
    return parsed[0][1]


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of the one sample ``name{labels}`` (labels exactly as given); fails when absent."""
    wanted = _labels(labels)
    for sample_name, sample_labels, value in samples(text):
        if sample_name == name and sample_labels == wanted:
            return value
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels`` (0 if none)."""
    wanted = labels.items()
    return sum(
        value
        for sample_name, sample_labels, value in samples(text)
        if sample_name == name and wanted <= sample_labels.items()
    )


def scrape(base_url: str) -> str:
    """The text of ``base_url``/metrics."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return response.read().decode()
