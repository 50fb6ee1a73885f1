"""The fault battery's report: each scenario records what it lost, duplicated and
recovered, and the run prints one table of them at the end (`make chaos`)."""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

_RESULTS_KEY = pytest.StashKey[list]()
RESULTS_FILE = Path(__file__).resolve().parent.parent.parent / "var" / "chaos" / "latest.json"


@dataclass
class ChaosResult:
    scenario: str
    lost: int  # work (steps, messages) that never finished: must be 0
    duplicated: int  # results recorded more than once: must be 0
    recovered: int  # work the fault interrupted that was run or delivered again
    unit: str  # what the counts count: steps, messages
    seconds: float = 0.0
    note: str = ""
    test: str = field(default="", repr=False)


@pytest.fixture
def chaos_report(request):
    """Call `chaos_report(scenario=..., lost=..., duplicated=..., recovered=..., unit=...)`
    once the scenario's checks passed or failed: both are reported."""
    started = time.monotonic()

    def report(**counts) -> ChaosResult:
        result = ChaosResult(
            **counts, seconds=round(time.monotonic() - started, 1), test=request.node.name
        )
        request.config.stash.setdefault(_RESULTS_KEY, []).append(result)
        return result

    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(_RESULTS_KEY, [])
    if not results:
        return
    header = ("scenario", "unit", "lost", "duplicated", "recovered", "seconds", "note")
    rows = [
        (r.scenario, r.unit, str(r.lost), str(r.duplicated), str(r.recovered),
         f"{r.seconds:.1f}", r.note)
        for r in results
    ]  # fmt: skip
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    terminalreporter.section("chaos: lost / duplicated / recovered")
    for line in (fmt.format(*header), "  ".join("-" * w for w in widths)):
        terminalreporter.write_line(line)
    for row in rows:
        terminalreporter.write_line(fmt.format(*row))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    terminalreporter.write_line(f"saved {RESULTS_FILE.relative_to(RESULTS_FILE.parents[2])}")
