"""Agent messaging on real agent processes, real Redis and the real database."""

import pytest

from agents import mailbox
from agents.mailbox import GROUP, RequestFailed, RequestTimeout
from agents.models import Message
from coordination.models import StepRun
from coordination.services import run_start
from events.models import Event
from tests.processes import wait_for
from tests.runs import wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_streams")]


def wait_handled(messages, *, timeout: float = 30) -> list[Message]:
    ids = [m.pk for m in messages]
    wait_for(
        lambda: Message.objects.filter(pk__in=ids, state="handled").count() == len(ids),
        timeout=timeout,
        what=f"messages {ids} to be handled",
    )
    return list(Message.objects.filter(pk__in=ids).order_by("id"))


def handled_by(message: Message) -> list[str]:
    """The agents whose test.record handler committed for `message`."""
    events = Event.objects.filter(kind="test.handled", subject=f"message:{message.pk}")
    return [e.data["agent"] for e in events]


def test_a_message_is_handled_once_and_acknowledged(start_agent, redis_client):
    process = start_agent("alpha")

    sent = mailbox.send(to="alpha", kind="test.record", payload={"text": "hi"}, sender="ops")

    (message,) = wait_handled([sent])
    assert (message.state, message.deliveries, message.consumer) == (
        "handled", 1, f"alpha:{process.pid}"
    )  # fmt: skip
    assert (message.stream, message.sender, message.recipient) == (
        "hive:inbox:agent:alpha", "ops", "alpha"
    )  # fmt: skip
    assert message.stream_id and message.handled_at and message.error == ""
    assert handled_by(message) == ["alpha"]
    assert redis_client.xpending("hive:inbox:agent:alpha", GROUP)["pending"] == 0
    wait_for(lambda: Message.objects.get(pk=sent.pk).acked_at, timeout=10, what="acked_at recorded")
    assert Message.objects.get(pk=sent.pk).acked_at >= message.handled_at


def test_a_message_to_a_role_is_handled_by_one_agent_of_the_role(start_agents):
    start_agents({"name": "r1", "role": "reviewer"}, {"name": "r2", "role": "reviewer"})

    sent = [mailbox.send(role="reviewer", kind="test.record", sender="ops") for _ in range(20)]

    handled = wait_handled(sent)
    assert all(len(handled_by(m)) == 1 for m in handled)
    assert {m.recipient for m in handled} == {"role:reviewer"}


def test_broadcast_to_a_role_reaches_each_agent_once(start_agents):
    start_agents(
        {"name": "b1", "role": "builder"},
        {"name": "b2", "role": "builder"},
        {"name": "p1", "role": "planner"},
    )

    sent = mailbox.broadcast(role="builder", kind="test.record", payload={"n": 1}, sender="ops")

    handled = wait_handled(sent)
    assert sorted(m.recipient for m in handled) == ["b1", "b2"]
    assert len({m.correlation_id for m in handled}) == 1
    assert sorted(a for m in handled for a in handled_by(m)) == ["b1", "b2"]


def test_request_returns_the_handlers_reply(start_agent):
    process = start_agent("pinged")

    reply = mailbox.request(to="pinged", kind="ping", timeout=10, sender="ops")

    assert reply == {"pong": "pinged", "pid": process.pid}
    message = Message.objects.get(kind="ping")
    assert (message.state, message.result) == ("handled", reply)
    assert message.reply_to.startswith("hive:reply:") and message.correlation_id


def test_request_to_an_agent_that_is_down_times_out_and_waits_in_its_inbox(start_agent):
    first = start_agent("sleeper")
    first.stop()

    with pytest.raises(RequestTimeout) as raised:
        mailbox.request(to="sleeper", kind="test.record", timeout=1, sender="ops")

    message = Message.objects.get(kind="test.record")
    assert str(raised.value) == (
        f"no reply from sleeper to 'test.record' within 1 s (status: offline); "
        f"message {message.pk} waits in its inbox"
    )
    assert message.state == "pending"
    start_agent("sleeper")
    assert wait_handled([message])[0].state == "handled"


def test_a_request_whose_handler_fails_for_good_raises_its_error(start_agent, settings):
    start_agent("failing")

    with pytest.raises(RequestFailed) as raised:
        mailbox.request(to="failing", kind="no.such.kind", timeout=10, sender="ops")

    message = Message.objects.get(kind="no.such.kind")
    error = "agent 'failing' has no handler for messages of kind 'no.such.kind'"
    assert (
        str(raised.value)
        == f"failing failed to handle 'no.such.kind' (message {message.pk}): {error}"
    )
    assert (message.state, message.error, message.deliveries) == ("dead", error, 1)


def test_handoff_sends_the_context_and_is_recorded_on_the_run(start_agent, make_workflow):
    start_agent("specialist")
    workflow = make_workflow([{"id": "review", "skill": "noop", "approval": True}])
    run = run_start(workflow=workflow, params={})
    step = StepRun.objects.get(run=run, key="review")

    sent = mailbox.handoff(
        to="specialist", run=run, step=step, context={"diff": "+1 -1"}, sender="planner"
    )

    (message,) = wait_handled([sent])
    assert message.payload == {"run": run.pk, "step": "review", "context": {"diff": "+1 -1"}}
    assert message.result is None and message.correlation_id == f"run:{run.pk}:review"
    event = Event.objects.get(subject=f"run:{run.pk}", kind="step.handoff")
    assert event.data == {"step": "review", "sender": "planner", "to": "specialist",
                          "message": message.pk}  # fmt: skip
    (entry,) = StepRun.objects.get(pk=step.pk).history
    assert entry["handoff"] == {"from": "planner", "to": "specialist", "message": message.pk}
    assert wait_run(run, states={"waiting"}).state == "waiting"  # the run itself goes on


def test_a_poison_message_is_dead_lettered_after_max_deliveries(
    start_agent, redis_client, settings
):
    start_agent("victim")

    sent = mailbox.send(to="victim", kind="test.poison", sender="ops")

    wait_for(
        lambda: Message.objects.get(pk=sent.pk).state == "dead", timeout=60, what="dead letter"
    )
    message = Message.objects.get(pk=sent.pk)
    max_deliveries = settings.HIVE_MAX_DELIVERIES
    assert (message.deliveries, message.error) == (
        max_deliveries, f"poisoned message {sent.pk}"
    )  # fmt: skip
    assert int(redis_client.get(f"test:poison:{sent.pk}")) == max_deliveries
    (dead,) = [f for _, f in redis_client.xrange("hive:dead") if f[b"mid"] == str(sent.pk).encode()]
    assert dead[b"error"] == f"poisoned message {sent.pk}".encode()
    assert int(dead[b"deliveries"]) == max_deliveries
    assert dead[b"stream"] == b"hive:inbox:agent:victim"
    assert redis_client.xpending("hive:inbox:agent:victim", GROUP)["pending"] == 0
    (event,) = Event.objects.filter(kind="message.dead", subject=f"message:{sent.pk}")
    assert event.data["agent"] == "victim"


def test_an_agent_killed_mid_message_handles_it_and_its_inbox_when_restarted(
    start_agent, redis_client
):
    first = start_agent("phoenix")
    # Its handler kills the agent on the first delivery, mid-transaction.
    crashing = mailbox.send(to="phoenix", kind="test.crash_once", sender="ops")
    wait_for(lambda: not first.alive(), timeout=30, what="the agent to die")
    first.stop()
    waiting = mailbox.send(to="phoenix", kind="test.record", sender="ops")

    second = start_agent("phoenix")

    crashing, waiting = wait_handled([crashing, waiting])
    # Taken over from the dead process at once (no idle time): its second delivery.
    assert (crashing.deliveries, crashing.consumer) == (2, f"phoenix:{second.pid}")
    assert crashing.result is None and crashing.error == ""
    assert (waiting.deliveries, waiting.consumer) == (1, f"phoenix:{second.pid}")
    assert handled_by(waiting) == ["phoenix"]
    assert redis_client.xpending("hive:inbox:agent:phoenix", GROUP)["pending"] == 0
    consumers = redis_client.xinfo_consumers("hive:inbox:agent:phoenix", GROUP)
    assert [c["name"] for c in consumers] == [f"phoenix:{second.pid}".encode()]


def test_workflow_steps_send_and_request_through_the_message_skills(start_agents, make_workflow):
    _, listener = start_agents(
        {"name": "runner", "skills": "message.send,message.request"}, {"name": "listener"}
    )
    workflow = make_workflow(
        [
            {"id": "tell", "skill": "message.send",
             "with": {"to": "listener", "kind": "test.record", "payload": {"v": "{{ params.v }}"}}},
            {"id": "ask", "skill": "message.request", "needs": ["tell"],
             "with": {"to": "listener", "kind": "ping", "timeout": 10}},
        ],
        params={"type": "object", "properties": {"v": {"type": "string"}}},
    )  # fmt: skip

    run = wait_run(run_start(workflow=workflow, params={"v": "1.4.0"}))

    assert run.state == "succeeded", run.error
    steps = {s.key: s for s in run.steps.all()}
    assert steps["ask"].output == {"reply": {"pong": "listener", "pid": listener.pid}}
    told = Message.objects.get(pk=steps["tell"].output["message"])
    assert (told.sender, told.recipient, told.payload) == ("runner", "listener", {"v": "1.4.0"})
    assert told.idempotency_key == f"{run.pk}:tell:1:message.send"
    assert handled_by(wait_handled([told])[0]) == ["listener"]


def test_an_agent_keeps_handling_after_redis_is_flushed(start_agent, redis_client):
    start_agent("survivor")
    before = wait_handled([mailbox.send(to="survivor", kind="test.record", sender="ops")])

    redis_client.flushdb()  # its stream, its group and every pending entry are gone
    after = mailbox.send(to="survivor", kind="test.record", sender="ops")

    (after,) = wait_handled([after])
    assert handled_by(after) == ["survivor"] and handled_by(before[0]) == ["survivor"]
    assert redis_client.xinfo_groups("hive:inbox:agent:survivor")[0]["pending"] == 0
