"""The fault battery's fixtures; its table is tests/chaos/report.py."""

import time
from dataclasses import asdict

import pytest

from tests.chaos.report import PROPERTY, ChaosResult


@pytest.fixture
def chaos_report(request):
    """Call `chaos_report(scenario=..., lost=..., duplicated=..., recovered=..., unit=...)`
    once the scenario's checks passed or failed: both are reported."""
    started = time.monotonic()

    def report(**counts) -> ChaosResult:
        result = ChaosResult(
            **counts, seconds=round(time.monotonic() - started, 1), test=request.node.name
        )
        request.node.user_properties.append((PROPERTY, asdict(result)))
        return result

    return report
