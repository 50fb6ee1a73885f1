"""Flow control: concurrency keys, rate limits and the reasons a ready step waits.

A step (or a run) counted against a key first locks the key's `FlowKey` row, so the
count is the same for every agent and host; locks are taken after the run's row (the
Engine's), in key order. A step holds a slot of its concurrency key while it is
queued or running; one over the limit stays pending with a reason and is started,
head of the line first (priority, then how long it has waited), when a slot frees
(coordination.engine.capacity_wake; the reaper wakes lines too). A rate limit
counts starts: it is checked when an agent claims the step (`rate_take`), so the
starts themselves keep the rate, and a step over it waits pending, holding no
worker, until its slot time.
"""

import time
from collections.abc import Iterable
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

from coordination.errors import RunInvalid
from coordination.models import FlowKey, Run, StepRun, Workflow
from coordination.spec import RUN_TIMEOUT
from coordination.templates import TemplateError, render

# What a pending step (or run) waits for: its waiting_reason starts with one of these.
WAIT_AGENT = "waiting for an agent"
WAIT_CAPACITY = "waiting for capacity"
WAIT_RATE = "waiting for rate"
WAIT_PAUSED = "paused"
# A step holds a slot of its concurrency key in these states.
HOLDING = (StepRun.State.QUEUED, StepRun.State.RUNNING)
# Rate slots are kept this far apart beyond the window, so a start at the slot time
# and the start it waited for are never read as one window (seconds).
_SLOT_MARGIN = 0.001
# Operators' limits (FlowKey rows with a rate) are read at most this often (seconds).
OPERATOR_RATES_TTL = 5.0
_operator_rates: tuple[float, dict[str, tuple[int, float]]] = (-OPERATOR_RATES_TTL, {})


def keys_lock(keys: Iterable[str]) -> dict[str, FlowKey]:
    """Lock the rows of `keys` (made if new), in key order."""
    keys = sorted(set(keys))
    rows = _locked(keys)
    if len(rows) < len(keys):
        FlowKey.objects.bulk_create(
            [FlowKey(key=key) for key in keys if key not in rows], ignore_conflicts=True
        )
        rows = _locked(keys)
    return rows


def _locked(keys: list[str]) -> dict[str, FlowKey]:
    found = FlowKey.objects.select_for_update().filter(key__in=keys).order_by("key")
    return {row.key: row for row in found}


def capacity_reason(key: str, in_use: int, limit: int) -> str:
    return f"{WAIT_CAPACITY}: {key} {in_use}/{limit}"


class Capacity:
    """The concurrency slots one engine transaction hands out, key by key.

    Key rows are locked in ascending order within a transaction, so two never wait
    on each other's keys: a step whose key sorts before one locked already does not
    lock it here; it joins the key's line, and the line moves after commit
    (`deferred`, which the engine wakes), in a transaction of its own.
    """

    def __init__(self):
        self._in_use: dict[str, int] = {}
        # A key whose line this transaction has found or joined: later steps queue
        # behind it rather than overtake it.
        self._line: set[str] = set()
        self._locked: set[str] = set()
        self.deferred: set[str] = set()
        # Keys whose line was empty when counted: as this transaction holds their lock
        # until it commits, whoever joins a line later counts a slot it freed, and the
        # line need not be woken after commit (a round trip per keyed step saved).
        self.quiet: set[str] = set()

    def lock(self, keys: Iterable[str]) -> None:
        """Lock the rows of `keys` now (a foreach's, all at once, in order)."""
        keys = sorted(set(keys) - self._locked)
        if self._locked:  # the ones sorting before are deferred (`admit`)
            keys = [key for key in keys if key > max(self._locked)]
        if keys:
            keys_lock(keys)
            self._locked.update(keys)

    def admit(self, step: StepRun, *, key: str, limit: int) -> str:
        """Take a slot of `key` for `step`; "" if it may go, else why it waits."""
        if step.state in HOLDING and step.concurrency_key == key and step.pk is not None:
            return ""  # sent again (lost, or its message was): it keeps its slot
        if key not in self._in_use:
            if self._locked and key < max(self._locked) and key not in self._locked:
                self.deferred.add(key)
                return f"{WAIT_CAPACITY}: {key}"
            self.lock([key])
            in_use, ahead, line = _key_count(step, key)
            self._in_use[key] = in_use
            if ahead:
                self._line.add(key)
            if not line:
                self.quiet.add(key)
        if key in self._line or self._in_use[key] >= limit:
            self._line.add(key)
            return capacity_reason(key, self._in_use[key], limit)
        self._in_use[key] += 1
        return ""


def _key_count(step: StepRun, key: str) -> tuple[int, int, int]:
    """In one query: the steps holding `key`, those waiting for it ahead of `step` (of
    higher priority, or of the same and waiting longer; a step not yet in the line is
    behind all of its own priority), and all those waiting for it."""
    ahead = Q(priority__gt=step.priority)
    if step.waiting_reason.startswith(WAIT_CAPACITY) and step.queued_at:
        ahead |= Q(priority=step.priority, queued_at__lt=step.queued_at)
    else:
        ahead |= Q(priority=step.priority)
    waiting = Q(state=StepRun.State.PENDING, waiting_reason__startswith=WAIT_CAPACITY)
    counts = (
        StepRun.objects.filter(concurrency_key=key)
        .exclude(pk=step.pk)
        .aggregate(
            in_use=Count("pk", filter=Q(state__in=HOLDING)),
            ahead=Count("pk", filter=waiting & ahead),
            line=Count("pk", filter=waiting),
        )
    )
    return counts["in_use"], counts["ahead"], counts["line"]


def run_capacity_reason(run: Run, *, limit: int) -> str:
    """Whether `run` may start under its workflow's concurrency key (locked here): ""
    if it may, else why it waits. Runs start in line: priority, then oldest first."""
    key = run.concurrency_key
    keys_lock([key])
    runs = Run.objects.filter(concurrency_key=key).exclude(pk=run.pk)
    # A run paused while in line has not started: it holds no slot.
    in_use = runs.filter(state__in=Run.STARTED, started_at__isnull=False).count()
    ahead = runs.filter(state=Run.State.PENDING).filter(
        Q(priority__gt=run.priority) | Q(priority=run.priority, pk__lt=run.pk)
    )
    if in_use >= limit or ahead.exists():
        return capacity_reason(key, in_use, limit)
    return ""


# --- rates -----------------------------------------------------------------------


def operator_rates() -> dict[str, tuple[int, float]]:
    """The operators' rate limits by key (admin: Flow keys), re-read every few seconds."""
    global _operator_rates
    read_at, rates = _operator_rates
    now = time.monotonic()
    if now - read_at >= OPERATOR_RATES_TTL:
        found = FlowKey.objects.filter(rate_limit__isnull=False, rate_per__isnull=False)
        rates = {
            key: (limit, per)
            for key, limit, per in found.values_list("key", "rate_limit", "rate_per")
        }
        _operator_rates = (now, rates)
    return rates


def operator_rates_forget() -> None:
    """Read the operators' rate limits again on next use (after one changed here)."""
    global _operator_rates
    _operator_rates = (-OPERATOR_RATES_TTL, {})


def skill_key(skill: str) -> str:
    """The key an operator's rate limit for a whole skill is set on."""
    return f"skill:{skill}"


def step_rates(step: StepRun, spec: dict) -> tuple:
    """The rates `step` (of `spec`, its keys rendered) starts under, each (key, limit,
    per): its spec's `rate` and an operator's on its skill, an operator's limit on a
    key overriding the spec's. They travel with its message, so its claim counts it
    against them without reading them again."""
    operator = operator_rates()
    rates = {}
    if spec.get("rate") and step.rate_key:
        rates[step.rate_key] = (spec["rate"]["limit"], float(spec["rate"]["per"]))
    if skill_key(step.skill) in operator:
        rates[skill_key(step.skill)] = operator[skill_key(step.skill)]
    return tuple((key, *operator.get(key, limit_per)) for key, limit_per in rates.items())


def rate_take(rates, *, now: float) -> tuple[str, float]:
    """Count a start at `now` (epoch seconds) against every rate, if each has room;
    ("", now) if it did, else (why, the time of the step's slot) and nothing counted."""
    rows = keys_lock(key for key, _, _ in rates)
    recent, slot, reason = {}, now, ""
    for key, limit, per in rates:
        starts = sorted(t for t in rows[key].starts if t > now - per)
        recent[key] = starts
        if len(starts) >= limit:
            # The window holding the last `limit` starts must pass before the next.
            at = starts[-limit] + per + _SLOT_MARGIN
            if at > slot:
                slot, reason = at, f"{WAIT_RATE}: {key} {limit}/{per:g}s"
    if reason:
        return reason, slot
    for key, _, _ in rates:
        rows[key].starts = [*recent[key], now]
        rows[key].save(update_fields=["starts"])
    return "", now


# --- a run's own ---------------------------------------------------------------------


def run_flow(*, workflow: Workflow, params: dict, priority, deadline) -> dict:
    """A new run's priority, deadline and concurrency key: the caller's, else the
    workflow's; a key that does not render refuses the run."""
    spec = workflow.spec
    priority = spec.get("priority", 0) if priority is None else priority
    timeout = spec.get("timeout") if deadline is None else deadline
    run_flow_check(priority=priority, deadline=timeout)
    key = ""
    if spec.get("concurrency"):
        try:
            key = str(render(spec["concurrency"]["key"], {"params": params}))
        except TemplateError as exc:
            raise RunInvalid(f"concurrency.key: {exc}", field="concurrency.key") from None
        if not 0 < len(key) <= 200:
            raise RunInvalid(
                f"concurrency.key: rendered to {len(key)} characters (1-200)",
                field="concurrency.key",
            )
    now = timezone.now()
    return {
        "priority": priority,
        "deadline": now + timedelta(seconds=timeout) if timeout is not None else None,
        "concurrency_key": key,
    }


def run_flow_check(*, priority=None, deadline=None) -> None:
    """Refuse a run's `priority` (0-9) or `deadline` (seconds) out of range, naming the
    field (RunInvalid); None is the workflow's. Doors that take them for a run started
    later (a command's invocation) check them first, so nothing is recorded as started."""
    if priority is not None and not (
        isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 9
    ):
        raise RunInvalid(
            f"priority: must be an integer from 0 to 9, not {priority!r}", field="priority"
        )
    if deadline is not None and not (
        isinstance(deadline, int | float)
        and not isinstance(deadline, bool)
        and 0 < deadline <= RUN_TIMEOUT["maximum"]
    ):
        raise RunInvalid(
            f"deadline: must be a number of seconds, more than 0 and at most "
            f"{RUN_TIMEOUT['maximum']}, not {deadline!r}",
            field="deadline",
        )
