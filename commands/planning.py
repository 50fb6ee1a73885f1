"""Dry runs: what a command would do, starting nothing."""

from agents.routing import RoutingError, route
from commands.loader import CONTEXT_KEY
from commands.models import Command
from commands.parser import Parsed
from commands.selectors import invocation_open_list, invocation_runs_seen
from coordination.templates import TemplateError, evaluate, render


def command_plan(
    *, command: Command, args: dict, parsed: Parsed, key: str, user, flow: dict | None = None
) -> dict:
    """What running the command would do, starting nothing: each step with where it
    would be routed and whether it runs, the approvals needed, the outcome of the
    overlap policy on `key`, and the run's priority and deadline (`flow`)."""
    plan = {"command": command.name, "version": command.version, "params": args}
    if command.builtin:
        return {**plan, "builtin": command.builtin}
    spec = command.workflow.spec
    context = {
        "params": {
            **args,
            CONTEXT_KEY: {
                "prompt": command.body.replace("$ARGUMENTS", parsed.arguments),
                "arguments": parsed.arguments,
            },
        },
        "steps": {},
        "run": {"id": None},
        "item": None,
    }
    steps = []
    for step in spec["steps"]:
        entry = {"id": step["id"], "skill": step["skill"], "needs": step["needs"]}
        try:
            entry["queue"] = route(skill=step["skill"], agent=step["agent"], role=step["role"])
        except RoutingError as exc:
            entry["queue"], entry["waits"] = None, f"waiting for an agent: {exc}"
        if step["when"]:
            entry["runs"] = _decided(lambda s=step: bool(evaluate(s["when"], context)))
        if step["foreach"] is not None:
            items = _decided(lambda s=step: render(s["foreach"], context))
            entry["items"] = len(items) if isinstance(items, list) else items
        if step["approval"]:
            entry["approval"] = entry.get("runs", True)
        steps.append(entry)
    approvals = [s["id"] for s in steps if s.get("approval") is True]
    open_ones = list(invocation_open_list(key=key))
    seen = invocation_runs_seen(user=user, invocations=open_ones)
    overlap = {
        "policy": command.overlap,
        "key": key,
        # Only the runs the user may see are named; the others are counted.
        "open_runs": [i.run_id for i in open_ones if i.run_id in seen],
        "hidden_open_runs": len([i for i in open_ones if i.run_id not in seen]),
        "would": _would(
            command.overlap, [i.run_id for i in open_ones], hidden=len(seen) < len(open_ones)
        ),
    }
    return {
        **plan,
        "workflow": str(command.workflow),
        **(flow or {}),
        "approvals": approvals,
        "overlap": overlap,
        "steps": steps,
    }


def _decided(compute):
    try:
        return compute()
    except TemplateError:
        return "decided when it runs (needs earlier steps' outputs)"


def _would(policy: str, open_runs: list[int], *, hidden: bool = False) -> str:
    if not open_runs or policy == Command.Overlap.ALLOW:
        return "start"
    if hidden and policy == Command.Overlap.CANCEL_RUNNING:
        return "refuse: a run you cannot see holds the key"
    return {"skip": "skip", "queue": "queue", "cancel-running": "cancel them, then start"}[policy]
