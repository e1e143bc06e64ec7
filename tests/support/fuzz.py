"""Property-based fuzzing (Hypothesis): how many cases to run, and a count of those that ran.

``TOFU_FUZZ_EXAMPLES`` sets the examples per fuzz test (default 200, which keeps ``make test``
fast); a longer run is the same tests with a bigger number, e.g.
``TOFU_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/test_fuzz.py``. The session
summary prints the cases each fuzz test ran.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("TOFU_FUZZ_EXAMPLES", "200"))

# No per-example deadline (the machine is shared and noisy); no health check on slow data
# generation, which the live-server test has by nature.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

cases: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, count in sorted(cases.items()):
        terminalreporter.write_line(f"fuzz: {name}: {count} cases")
