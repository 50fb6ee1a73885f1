"""The fault battery's table: each scenario records what it lost, duplicated and
recovered, and the run prints one table of them at the end (`make chaos`).

A scenario's result travels on its test's report (`user_properties`), so the table is
made where the reports arrive: the plain pytest process, or xdist's controller when
`make test` runs the suite on several workers. tests/conftest.py wires the hooks in,
as the controller loads only that conftest."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROPERTY = "chaos"
RESULTS_FILE = Path(__file__).resolve().parent.parent.parent / "var" / "chaos" / "latest.json"
_results: list["ChaosResult"] = []


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


def chaos_collect(report) -> None:
    """pytest_runtest_logreport: keep the results a test's call recorded."""
    if report.when == "call":
        _results.extend(ChaosResult(**r) for name, r in report.user_properties if name == PROPERTY)


def chaos_table(terminalreporter) -> None:
    """pytest_terminal_summary: print the table and save it in var/chaos/latest.json."""
    if not _results:
        return
    header = ("scenario", "unit", "lost", "duplicated", "recovered", "seconds", "note")
    rows = [
        (r.scenario, r.unit, str(r.lost), str(r.duplicated), str(r.recovered),
         f"{r.seconds:.1f}", r.note)
        for r in _results
    ]  # fmt: skip
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    terminalreporter.section("chaos: lost / duplicated / recovered")
    for line in (fmt.format(*header), "  ".join("-" * w for w in widths)):
        terminalreporter.write_line(line)
    for row in rows:
        terminalreporter.write_line(fmt.format(*row))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps([asdict(r) for r in _results], indent=2) + "\n")
    terminalreporter.write_line(f"saved {RESULTS_FILE.relative_to(RESULTS_FILE.parents[2])}")
