"""The registry of event kinds and subjects: the same names for the Python that emits
and the live pages that read them."""

import json

import pytest

from agents.models import Agent
from coordination.models import Run, StepRun
from events.kinds import (
    AGENT_STATUSES,
    FAMILIES,
    RUN_STATES,
    STEP_STATES,
    kind_check,
    run_subject,
    subject,
    subject_split,
)
from events.models import Event
from events.services import event_emit


def test_the_registered_states_are_the_models_states():
    assert set(RUN_STATES) == set(Run.State.values)
    assert set(STEP_STATES) == set(StepRun.State.values)
    assert set(AGENT_STATUSES) == set(Agent.Status.values)


def test_every_state_change_of_a_step_is_a_registered_kind():
    for state in StepRun.State.values:
        assert kind_check(f"step.{state}") == f"step.{state}"


@pytest.mark.parametrize("kind", ["step.exploded", "bogus.started", "run", ""])
def test_an_unregistered_kind_is_refused(kind):
    with pytest.raises(ValueError, match="unknown event kind"):
        kind_check(kind)


@pytest.mark.django_db
def test_emitting_an_unregistered_kind_stores_nothing():
    with pytest.raises(ValueError, match="step.exploded"):
        event_emit(kind="step.exploded", subject=run_subject(1))

    assert not Event.objects.exists()


def test_subjects_are_built_and_split_by_one_rule():
    assert run_subject(12) == "run:12"
    assert subject("agent", "builder-1") == "agent:builder-1"
    assert subject_split("agent:builder-1") == ("agent", "builder-1")
    assert subject_split("plain") == ("", "plain")
    with pytest.raises(ValueError, match="unknown subject type"):
        subject("planet", 3)


@pytest.mark.django_db
def test_live_pages_read_the_states_from_the_registry(admin_client):
    page = admin_client.get("/runs/").content.decode()

    script = page.split('<script id="hive-event-names" type="application/json">')[1]
    names = json.loads(script.split("</script>")[0])
    assert names["families"]["step"] == {"subject": "run", "states": list(STEP_STATES)}
    assert names["families"]["run"]["states"] == list(RUN_STATES)
    assert set(names["families"]) == set(FAMILIES)
