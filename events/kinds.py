"""The names events carry, in one place for the Python that emits them and the
dashboard's live.js that reads them (through the `event_names` JSON script).

A kind is `<family>.<what>` (`step.running`); a subject is `<type>:<id>` (`run:12`),
what the event is about and so who may see it. A family's `states` are the kinds
that set its object's state, which the live pages write straight into the DOM.
Events never import the apps that emit them: the states are spelled out here, and
tests/events/test_kinds.py holds them equal to the models' choices.
"""

from dataclasses import dataclass

RUN_STATES = ("pending", "running", "waiting", "paused", "succeeded", "failed", "cancelled")
STEP_STATES = ("pending", "queued", "running", "waiting", "succeeded", "failed", "skipped",
               "cancelled")  # fmt: skip
AGENT_STATUSES = ("starting", "idle", "busy", "draining", "offline")
# A command's invocation outcomes that are refusals, emitted as `command.<code>`.
COMMAND_REFUSALS = ("invalid", "denied", "failed")


@dataclass(frozen=True)
class Family:
    subject: str  # the subject type its events are about
    states: tuple[str, ...] = ()
    others: tuple[str, ...] = ()

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.states + self.others)


FAMILIES = {
    "run": Family("run", states=RUN_STATES, others=("started", "retried", "resumed", "signalled")),
    # A step's events are about its run: whoever sees the run sees its steps.
    "step": Family(
        "run", states=STEP_STATES, others=("approved", "expanded", "retrying", "lost", "handoff")
    ),
    "workflow": Family("workflow", others=("saved",)),
    # `agent.shutdown`: asked to shut down (the API, the admin), recorded before it is told.
    "agent": Family("agent", others=("online", "status", "offline", "scaled", "shutdown")),
    "message": Family("message", others=("sent", "dead", "handled")),
    "command": Family(
        "command",
        others=("created", "updated", "enabled", "disabled", "started", *COMMAND_REFUSALS),
    ),
    "schedule": Family("schedule", others=("created", "saved", "enabled", "disabled", "removed")),
    # What `hive up` did about a process that exited (ops/supervisor.py): restarted it,
    # found it flapping, saw it run steadily again, or left it down as it was asked.
    "process": Family("process", others=("restarted", "flapping", "recovered", "stopped")),
    # A coordinator took the leader lock, or stopped leading (coordination.leadership).
    "coordinator": Family("coordinator", others=("leading", "standby")),
}
SUBJECT_TYPES = ("run", "agent", "message", "workflow", "command", "invocation", "schedule",
                 "process", "coordinator")  # fmt: skip


def kind_check(kind: str) -> str:
    """`kind` if it is a registered kind; a ValueError (a programming error) if not."""
    family, _, what = kind.partition(".")
    if family not in FAMILIES or what not in FAMILIES[family].kinds:
        raise ValueError(f"unknown event kind {kind!r}: add it to events/kinds.py")
    return kind


def subject(type_: str, name: object) -> str:
    """`run:12`, `agent:builder-1`, ..."""
    if type_ not in SUBJECT_TYPES:
        raise ValueError(f"unknown subject type {type_!r}: add it to events/kinds.py")
    return f"{type_}:{name}"


def run_subject(run_id: int) -> str:
    return subject("run", run_id)


def agent_subject(name: str) -> str:
    return subject("agent", name)


def subject_split(value: str) -> tuple[str, str]:
    """`("run", "12")` for `run:12`; the type is empty for a subject without one."""
    type_, sep, name = value.partition(":")
    return (type_, name) if sep else ("", value)


def client_names() -> dict:
    """What live.js needs: each family's states and subject type."""
    return {
        "families": {
            name: {"subject": family.subject, "states": list(family.states)}
            for name, family in FAMILIES.items()
        },
        "subjects": list(SUBJECT_TYPES),
    }
