"""Helpers for tests that start runs."""

from collections import Counter

from coordination.models import Run, StepRun
from tests.processes import wait_for


def wait_run(run: Run, *, timeout: float = 60, states=Run.TERMINAL) -> Run:
    """Wait until the run reaches one of `states`; return it fresh from the database."""
    try:
        return wait_for(
            lambda: (fresh := Run.objects.get(pk=run.pk)).state in states and fresh,
            timeout=timeout,
            what=f"run {run.pk} to reach {sorted(states)}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; steps now: {_stuck(run)}") from None


def _stuck(run: Run) -> str:
    """What the unfinished steps are doing, for the failure message."""
    open_steps = run.steps.exclude(state__in=StepRun.TERMINAL)
    states = Counter(open_steps.values_list("state", flat=True))
    fields = ("key", "state", "attempt", "tries", "agent", "queue", "waiting_reason")
    sample = list(open_steps.values(*fields)[:5])
    return f"{dict(states)} e.g. {sample}"


def steps_of(run: Run) -> dict:
    return {s.key: s for s in run.steps.all()}


def definition_refusal(tmp_path, text: str, *, name: str = "deploy.yaml") -> str:
    """Load the workflow definition `text` from a file; the error it is refused with,
    after the file's path (`:7: step 'x': ...`). Nothing is saved."""
    from coordination.models import Workflow
    from coordination.spec import SpecError, spec_load

    path = tmp_path / name
    path.write_text(text)
    try:
        spec_load(path)
    except SpecError as exc:
        assert not Workflow.objects.exists()
        return str(exc).removeprefix(str(path))
    raise AssertionError(f"{name} was not refused")
