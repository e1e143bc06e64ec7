"""Property-based fuzzing (Hypothesis): how many cases to run, and a count of those that ran.

``TOFU_FUZZ_EXAMPLES`` sets the examples per fuzz test (default 200, which keeps ``make test``
fast); a longer run is the same tests with a bigger number, e.g.
``TOFU_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz.py``. The session
summary prints the cases each fuzz test ran.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, settings

EXAMPLES = int(os.environ.get("TOFU_FUZZ_EXAMPLES", "200"))

# No per-example deadline (the machine is shared and noisy); no health check on slow data
# generation, which the live-server test has by nature.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

cases: Counter[str] = Counter()


def example_paths(paths: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hypothesis ``example`` rows for a test taking ``path`` and ``request_headers``: cases
    that are always run, besides the generated ones."""

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        for path in paths:
            test = example(path=path, request_headers={})(test)
        return test

    return decorate


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, count in sorted(cases.items()):
        terminalreporter.write_line(f"fuzz: {name}: {count} cases")
