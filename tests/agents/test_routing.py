"""Capability routing on real agent processes: work goes only where the skill is."""

from collections import Counter

import pytest

from agents.routing import RoutingError, route
from agents.tasks import skill_run_task
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_many(skill: str, inputs: dict, count: int, **where) -> list[str]:
    queue = route(skill=skill, **where)
    results = [skill_run_task.apply_async((skill, inputs), queue=queue) for _ in range(count)]
    return [r.get(timeout=60)["agent"] for r in results]


def test_steps_for_a_skill_run_only_on_the_agent_that_has_it(start_agents):
    start_agents({"name": "sleeper", "skills": "noop,sleep"}, {"name": "echoer", "skills": "noop"})

    assert set(run_many("sleep", {"seconds": 0}, 20)) == {"sleeper"}
    assert set(run_many("noop", {}, 10, agent="echoer")) == {"echoer"}


def test_steps_spread_over_the_agents_sharing_a_skill(start_agents):
    start_agents({"name": "left", "skills": "sleep"}, {"name": "right", "skills": "sleep"})

    ran_on = Counter(run_many("sleep", {"seconds": 0.02}, 100))

    assert sum(ran_on.values()) == 100
    assert set(ran_on) == {"left", "right"}
    assert min(ran_on.values()) >= 20, ran_on


def test_role_routing_reaches_only_that_role(start_agents):
    start_agents(
        {"name": "rev", "role": "reviewer", "skills": "noop"},
        {"name": "bld", "role": "builder", "skills": "noop"},
    )

    assert set(run_many("noop", {}, 10, role="reviewer")) == {"rev"}


def test_dispatch_refuses_work_no_online_agent_can_take(start_agent):
    start_agent("plain", role="builder", skills="noop")

    with pytest.raises(RoutingError, match="any agent does not offer skill 'sleep'"):
        route(skill="sleep")
    with pytest.raises(RoutingError, match="no online agent matches role 'reviewer'"):
        route(skill="noop", role="reviewer")
    with pytest.raises(RoutingError, match="agent 'plain' does not offer skill 'http.request'"):
        route(skill="http.request", agent="plain")


def test_a_skill_error_on_the_agent_comes_back_with_its_message(start_agent):
    agent = start_agent("strict", skills="sleep")

    result = skill_run_task.apply_async(("sleep", {"seconds": "soon"}), queue=route(skill="sleep"))

    with pytest.raises(Exception, match="sleep: inputs.seconds: 'soon' is not of type 'number'"):
        result.get(timeout=30)
    # The caller's answer, not the agent's fault: one line in its log, no traceback.
    # (The worker logs the failure after it stored the result the caller just read.)
    wait_for(lambda: "'soon' is not of type 'number'" in agent.log(), timeout=10,
             what="the refusal in the agent's log")  # fmt: skip
    assert "Traceback" not in agent.log()
