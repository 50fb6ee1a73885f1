"""One row of the bench table: a figure beside its baseline measured in the same run."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Result:
    benchmark: str
    metric: str
    value: float
    baseline: float
    unit: str
    baseline_name: str
    goal: str  # e.g. "<= 1.5x" on the ratio value / baseline

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


def render(rows: list[Result]) -> str:
    header = ("benchmark", "metric", "hive", "baseline", "ratio", "goal")
    lines = [
        (
            r.benchmark,
            r.metric,
            f"{r.value:,.2f} {r.unit}",
            f"{r.baseline:,.2f} {r.unit} ({r.baseline_name})",
            f"{r.ratio:.2f}x",
            r.goal,
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), rule, *(fmt.format(*line) for line in lines)])
