"""The built-in commands, `/hive:*`: operating Hive through the same services as the
API and the admin. Each is registered here with its parameters and permission and
synced into the Command table (`builtins_sync`), so it is listed, permission-checked
and audited like any command. `CommandsConfig.ready` imports this module, which
registers them in `commands.registry`."""

import json

from agents.mailbox import user_sender
from agents.models import Agent
from agents.selectors import agent_list, agent_status_counts
from agents.services import agent_drain, agent_resume, message_send
from commands.parser import hint_names
from commands.registry import builtin
from commands.schedules import schedule_check, schedule_create, schedule_delete, schedule_update
from commands.selectors import (
    command_allowed,
    command_list,
    invocation_queued_count,
    schedule_list,
    schedule_when,
)
from coordination.models import Run, StepRun
from coordination.selectors import run_get, run_list, run_state_counts, step_get
from coordination.services import (
    RUN_ACTION_PERMISSIONS,
    SIGNAL_PAYLOAD_MAX,
    run_cancel,
    run_pause,
    run_resume,
    signal_send,
    step_approve,
    step_reject,
    step_retry,
)
from hive_core.api import ID_PATTERN
from hive_core.errors import Conflict, Denied, Invalid, NotFound

AGENT_CONTROL = "agents.change_agent"
MESSAGE_SEND = "agents.add_message"
_RUN = {"type": "integer", "minimum": 1}
_STEP = {"type": "string", "minLength": 1, "maxLength": 120}
_AGENT = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "maxLength": 64}
# A run's id (a number: `minimum` holds for numbers only) or an agent's name (`pattern`
# and `maxLength` hold for strings only); the parser reads a number first.
_RUN_OR_AGENT = {"type": ["integer", "string"], "minimum": 1,
                 "pattern": _AGENT["pattern"], "maxLength": _AGENT["maxLength"]}  # fmt: skip


# --- reading -----------------------------------------------------------------------


@builtin("help", hint="[command]", params={"command": {"type": "string", "maxLength": 100}})
def _help(*, user, command: str = "") -> dict:
    """List the commands you can run, or show one command's usage and help.

    `/hive:help` lists every enabled command; `/hive:help demo:release` shows its
    arguments and its help text.
    """
    if command:
        found = command_list(include_disabled=True).filter(name=command.lstrip("/").lower()).first()
        if found is None:
            raise NotFound(f"no command named /{command.lstrip('/')}")
        usage = f"/{found.name} {found.argument_hint}".rstrip()
        props = found.params.get("properties", {})
        # The hint's order, then by name (jsonb on PostgreSQL does not keep key order).
        hinted = [n for n in hint_names(found.argument_hint) if n in props]
        params = [
            f"  {name}: {_describe(props[name])}"
            + (" (required)" if name in found.params.get("required", []) else "")
            for name in hinted + sorted(n for n in props if n not in hinted)
        ]
        text = "\n".join(
            [usage, found.description, *(["arguments:", *params] if params else []), "", found.body]
        ).strip()
        return {"message": text, "command": found.name, "params": found.params}
    commands = [c for c in command_list() if command_allowed(command=c, user=user)]
    lines = [f"/{c.name} {c.argument_hint}".rstrip() + f" — {c.description}" for c in commands]
    return {"message": "\n".join(lines), "commands": [c.name for c in commands]}


def _describe(prop: dict) -> str:
    kind = prop.get("type", "any")
    kind = " | ".join(str(v) for v in prop["enum"]) if "enum" in prop else kind
    default = f", default {prop['default']}" if "default" in prop else ""
    return f"{kind if isinstance(kind, str) else ' | '.join(kind)}{default}"


@builtin("status")
def _status(*, user) -> dict:
    """Agents by status, open runs by state, and queued commands."""
    # The dashboard's overview counts, the states present (and runs open) only.
    agents = {status: n for status, n in agent_status_counts().items() if n}
    runs = {
        state: n
        for state, n in run_state_counts(user=user).items()
        if n and state not in Run.TERMINAL
    }
    queued = invocation_queued_count()
    message = "\n".join(
        [
            "agents: " + (", ".join(f"{n} {s}" for s, n in sorted(agents.items())) or "none"),
            "open runs: " + (", ".join(f"{n} {s}" for s, n in sorted(runs.items())) or "none"),
            f"queued commands: {queued}",
        ]
    )
    return {"message": message, "agents": agents, "runs": runs, "queued": queued}


@builtin("agents")
def _agents(*, user) -> dict:
    """Every registered agent: role, status, load and skills."""
    rows = [
        {"name": a.name, "role": a.role, "status": a.status, "load": a.load, "skills": a.skills}
        for a in agent_list()
    ]
    lines = [
        f"{a['name']} ({a['role']}): {a['status']}, load {a['load']:.2f}, "
        f"skills {', '.join(a['skills'])}"
        for a in rows
    ]
    return {"message": "\n".join(lines) or "no agents", "agents": rows}


@builtin("runs", hint="[state]", params={"state": {"enum": list(Run.State.values)}})
def _runs(*, user, state: str = "") -> dict:
    """The 20 newest runs you may see, or those in one state: `/hive:runs waiting`."""
    runs = list(run_list(user=user, state=state).order_by("-id")[:20])
    lines = [f"run {r.pk} of {r.workflow}: {r.state}" for r in runs]
    rows = [{"id": r.pk, "workflow": str(r.workflow), "state": r.state} for r in runs]
    return {"message": "\n".join(lines) or "no runs", "runs": rows}


@builtin("run", hint="<run>", params={"run": _RUN}, required=["run"])
def _run(*, user, run: int) -> dict:
    """One run: its state and each step's state, agent and error."""
    found = _get_run(run, user=user)
    steps = list(found.steps.filter(group=None).order_by("id"))
    lines = [f"run {found.pk} of {found.workflow}: {found.state}" + _colon(found.error)]
    lines += [
        f"  {s.key}: {s.state}" + (f" on {s.agent}" if s.agent else "") + _colon(s.error)
        + _colon(s.waiting_reason if s.state in _WAITS else "")
        for s in steps
    ]  # fmt: skip
    rows = [
        {"key": s.key, "state": s.state, "agent": s.agent, "output": s.output, "error": s.error}
        for s in steps
    ]
    return {"message": "\n".join(lines), "run": found.pk, "state": found.state, "steps": rows}


def _colon(text: str) -> str:
    return f": {text}" if text else ""


# The states of a step whose waiting_reason says what it waits for.
_WAITS = (StepRun.State.PENDING, StepRun.State.WAITING)


# --- control -----------------------------------------------------------------------


@builtin(
    "cancel",
    hint="<run>",
    params={"run": _RUN},
    required=["run"],
    permission=RUN_ACTION_PERMISSIONS["cancel"],
)
def _cancel(*, user, run: int) -> dict:
    """Cancel a run: running steps are stopped, nothing more starts."""
    return _run_answer(run_cancel(run=_get_run(run, user=user), user=user))


@builtin(
    "pause",
    hint="<run>",
    params={"run": _RUN},
    required=["run"],
    permission=RUN_ACTION_PERMISSIONS["pause"],
)
def _pause(*, user, run: int) -> dict:
    """Pause a run: nothing new starts, running steps finish, approvals can still be decided.

    Its ready steps wait (`paused`) until `/hive:resume <run>`.
    """
    return _run_answer(run_pause(run=_get_run(run, user=user), user=user))


@builtin(
    "retry",
    hint="<run> <step>",
    params={"run": _RUN, "step": _STEP},
    required=["run", "step"],
    permission=RUN_ACTION_PERMISSIONS["retry"],
)
def _retry(*, user, run: int, step: str) -> dict:
    """Retry a failed step of a run, and every step after it."""
    found = step_retry(step=_get_step(run, step, user=user), user=user)
    return {"message": f"run {found.pk}: {found.state} (retrying {step})", "run": found.pk}


@builtin(
    "approve",
    hint="<run> [step]",
    params={"run": _RUN, "step": _STEP},
    required=["run"],
    permission=RUN_ACTION_PERMISSIONS["approve"],
)
def _approve(*, user, run: int, step: str = "") -> dict:
    """Approve a step waiting for approval (the run's only waiting step if none is named)."""
    approved = step_approve(step=_get_step(run, step, user=user), user=user)
    return {"message": f"run {run}: {approved.key} approved", "run": run, "step": approved.key}


@builtin(
    "reject",
    hint="<run> [step] [reason]",
    params={"run": _RUN, "step": _STEP, "reason": {"type": "string", "maxLength": 500}},
    required=["run"],
    permission=RUN_ACTION_PERMISSIONS["reject"],
)
def _reject(*, user, run: int, step: str = "", reason: str = "") -> dict:
    """Reject a step waiting for approval: the step and its run fail."""
    rejected = step_reject(step=_get_step(run, step, user=user), user=user, reason=reason)
    return {"message": f"run {run}: {rejected.key} rejected", "run": run, "step": rejected.key}


@builtin(
    "signal",
    hint="<run> <name> [payload]",
    params={
        "run": _RUN,
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "payload": {"type": "string", "maxLength": SIGNAL_PAYLOAD_MAX},
    },
    required=["run", "name"],
    permission=RUN_ACTION_PERMISSIONS["signal"],
)
def _signal(*, user, run: int, name: str, payload: str = "") -> dict:
    """Send a signal to a run: it ends the first step waiting for it (`wait_for`).

    The payload, JSON (quote it: '{"ok": true}'), becomes that step's output.
    """
    try:
        data = json.loads(payload) if payload else None
    except ValueError as exc:
        raise Invalid(f"payload: not JSON: {exc}") from None
    sent = signal_send(run=_get_run(run, user=user), name=name, payload=data, user=user,
                       source="command")  # fmt: skip
    ended = f": {sent.step.key} ended" if sent.step else ": kept until a step waits for it"
    return {"message": f"run {run}: signal {name!r} sent{ended}", "run": run,
            "signal": sent.pk, "step": sent.step.key if sent.step else None}  # fmt: skip


@builtin(
    "drain", hint="<agent>", params={"agent": _AGENT}, required=["agent"], permission=AGENT_CONTROL
)
def _drain(*, user, agent: str) -> dict:
    """Drain an agent: it finishes its running steps and takes no new ones."""
    found = agent_drain(agent=_get_agent(agent))
    return {"message": f"agent {found.name}: {found.status}", "agent": found.name}


@builtin(
    "resume",
    hint="<target>",
    params={"target": _RUN_OR_AGENT},
    required=["target"],
    # Resuming a run and resuming an agent are two actions, each with the permission
    # of the same action in the API. A user holding either may execute the command;
    # the handler then checks the one its target needs, so neither permission resumes
    # what only the other may.
    permission=(RUN_ACTION_PERMISSIONS["resume"], AGENT_CONTROL),
)
def _resume(*, user, target: int | str) -> dict:
    """Resume a paused run (its id) or a drained agent (its name).

    `/hive:resume 42`: run 42 starts what is ready again (needs coordination.change_run).
    `/hive:resume worker`: the agent takes steps again (needs agents.change_agent).
    A number is always a run's id.
    """
    if isinstance(target, int):
        _permission_check(user, RUN_ACTION_PERMISSIONS["resume"], what="resuming a run")
        return _run_answer(run_resume(run=_get_run(target, user=user), user=user))
    _permission_check(user, AGENT_CONTROL, what="resuming an agent")
    found = agent_resume(agent=_get_agent(target))
    return {"message": f"agent {found.name}: {found.status}", "agent": found.name}


@builtin(
    "send",
    hint="<agent> <text...>",
    params={"agent": _AGENT, "text": {"type": "string", "minLength": 1, "maxLength": 10_000}},
    required=["agent", "text"],
    permission=MESSAGE_SEND,
)
def _send(*, user, agent: str, text: str) -> dict:
    """Send a note to an agent's inbox; an agent that is down finds it when it is back."""
    sent = message_send(sender=user_sender(user), to=agent, kind="note", payload={"text": text})
    return {"message": f"message {sent.pk} sent to {agent}", "id": sent.pk}


@builtin(
    "schedule",
    hint="<action> [target]",
    params={
        "action": {"enum": ["list", "add", "enable", "disable", "remove"]},
        "target": {"type": "string", "maxLength": 2000},
        "every": {"type": "integer", "minimum": 1, "maximum": 31_536_000},
        "cron": {"type": "string", "maxLength": 100},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    required=["action"],
    # Any user may ask; each action then needs the permission its API action needs
    # (SCHEDULE_ACTION_PERMISSIONS), and acts on their own schedules (staff: all).
    # A schedule's id in ASCII digits, checked with the other arguments so a bad one
    # points at its token; str.isdigit() took '²' (then int() failed: a 500) and '٣'
    # (Arabic-Indic three, taken as schedule 3).
    rules={
        "if": {"properties": {"action": {"enum": ["enable", "disable", "remove"]}}},
        "then": {"properties": {"target": {"pattern": f"^{ID_PATTERN}$"}}},
    },
)
def _schedule(
    *, user, action: str, target: str = "", every: int | None = None, cron: str = "", name: str = ""
) -> dict:
    """Run a command with fixed arguments on a schedule, as you.

    `/hive:schedule add "/demo:pipeline items=5" every=60`, or `cron="0 6 * * 1-5"`;
    `/hive:schedule list`; `/hive:schedule disable|enable|remove <id>`.
    """
    schedule_check(user=user, action=action)
    if action == "list":
        rows = schedule_list(user=user)
        lines = [
            f"{s['id']}: {s['text']} {s['when']}" + ("" if s["enabled"] else " (disabled)")
            for s in rows
        ]
        return {"message": "\n".join(lines) or "no schedules", "schedules": rows}
    if not target:
        raise Invalid(
            f"{action} needs a target: "
            + (
                'the command text, e.g. "/demo:pipeline items=5"'
                if action == "add"
                else "the schedule's id"
            )
        )
    if action == "add":
        task = schedule_create(text=target, user=user, every=every, cron=cron, name=name)
        return {
            "message": f"schedule {task.pk}: {target} {schedule_when(task)}",
            "schedule": task.pk,
        }
    if action == "remove":
        schedule_delete(schedule_id=int(target), user=user)
        return {"message": f"schedule {target} removed", "schedule": int(target)}
    task = schedule_update(schedule_id=int(target), enabled=action == "enable", user=user)
    return {"message": f"schedule {task.pk} {action}d", "schedule": task.pk}


# --- helpers -----------------------------------------------------------------------


def _run_answer(run: Run) -> dict:
    return {"message": f"run {run.pk}: {run.state}", "run": run.pk, "state": run.state}


def _permission_check(user, permission: str, *, what: str) -> None:
    """A built-in executed with any one of its permissions (`/hive:resume`) checks the
    one its target needs, in the words of the command's own check."""
    if not user.has_perm(permission):
        raise Denied(
            f"permission denied: {what} needs {permission} and {user.username} does not have it"
        )


def _get_run(pk: int, *, user) -> Run:
    try:
        return run_get(user=user, pk=pk)
    except Run.DoesNotExist:
        # A run the user may not see is no run, as the API's 404: saying it exists
        # would tell them what they may not read.
        raise NotFound(f"no run {pk}") from None


def _get_step(run: int, key: str, *, user) -> StepRun:
    found = _get_run(run, user=user)
    if not key:
        waiting = list(found.steps.filter(state=StepRun.State.WAITING, group=None))
        if not waiting and found.state in Run.TERMINAL:
            raise Conflict(f"run {run} is {found.state}: no step waits for approval")
        if len(waiting) != 1:
            raise Invalid(
                f"run {run} has {len(waiting)} steps waiting for approval; name one"
                + (f" ({', '.join(s.key for s in waiting)})" if waiting else "")
            )
        return waiting[0]
    try:
        return step_get(run=found, key=key)
    except StepRun.DoesNotExist:
        keys = ", ".join(found.steps.filter(group=None).values_list("key", flat=True))
        raise NotFound(f"run {run} has no step {key!r} (steps: {keys})") from None


def _get_agent(name: str) -> Agent:
    found = agent_list().filter(name=name).first()
    if found is None:
        raise NotFound(f"no agent named {name!r}")
    return found
