import itertools

import pytest

from coordination.models import Run
from coordination.services import workflow_save
from coordination.spec import spec_validate
from tests.processes import wait_for

_names = itertools.count()


@pytest.fixture
def coordinator(processes):
    """The real coordinator: beat and reaper (retries, lost steps, waiting steps)."""
    return processes.start("coordinator", name="coordinator")


@pytest.fixture
def make_workflow():
    def make(steps: list[dict], params: dict | None = None, name: str = ""):
        spec = spec_validate({"steps": steps, "params": params or {}}, source="test")
        workflow, _ = workflow_save(name=name or f"wf-{next(_names)}", spec=spec)
        return workflow

    return make


def wait_run(run: Run, *, timeout: float = 60, states=Run.TERMINAL) -> Run:
    """Wait until the run reaches one of `states`; return it fresh from the database."""
    return wait_for(
        lambda: (fresh := Run.objects.get(pk=run.pk)).state in states and fresh,
        timeout=timeout,
        what=f"run {run.pk} to reach {sorted(states)}",
    )


def steps_of(run: Run) -> dict:
    return {s.key: s for s in run.steps.all()}
