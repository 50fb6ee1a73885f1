import json
import logging
import traceback

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from agents import worker
from agents.routing import agent_queues
from agents.skills import SkillContext, SkillError, skill_execute
from coordination.dispatch import Continuation
from coordination.leadership import leading
from coordination.models import StepRun
from coordination.reaper import reap_pass
from coordination.services import step_claim, step_fail, step_succeed

logger = logging.getLogger(__name__)


# The outcome goes to the database, so Celery's result backend is not written.
@shared_task(bind=True, name="coordination.execute_step_task", ignore_result=True)
def execute_step_task(self, step_run_id: int, attempt: int, rates=()) -> None:
    """Claim the step, run its skill, store the outcome (the engine advances the DAG);
    then run the next step of the chain if the engine kept it for this task. `rates`:
    those the step starts under ([key, limit, per] each), counted as it is claimed."""
    agent = worker.identity.name if worker.identity else self.request.hostname
    here = _continuation(self.request)
    step = step_claim(step_run_id=step_run_id, attempt=attempt, agent=agent, rates=rates)
    # None: a duplicate or stale delivery (someone else has, or had, this step), or one
    # that waits for its rate's slot.
    while step is not None:
        _execute(self, step, agent, here)
        kept = here.take() if here else None
        step = kept and step_claim(
            step_run_id=kept[0].pk, attempt=kept[0].attempt, agent=agent, rates=kept[1]
        )


def _continuation(request) -> Continuation | None:
    """Only an agent's task may keep steps, and only one without time limits: the
    limits were set for the step it was sent with."""
    if worker.identity is None or any(request.timelimit or ()):
        return None
    spec = worker.identity
    queues = agent_queues(name=spec.name, role=spec.role, skills=spec.skills)
    return Continuation(agent=spec.name, queues=queues, task_id=request.id)


def _execute(task, step: StepRun, agent: str, here: Continuation | None) -> None:
    # The same key on every delivery of this try, so outside effects happen once.
    # `run`: the step's run, for the skills that act as the user who started it.
    context = SkillContext(agent=agent, idempotency_key=f"{step.run_id}:{step.key}:{step.tries}",
                           extra={"run": step.run_id})  # fmt: skip
    try:
        output = skill_execute(step.skill, step.inputs or {}, context=context)
    except SoftTimeLimitExceeded:
        # The time limit may have interrupted a query, leaving the connection in a
        # state Django cannot detect (celery/celery#9824): start a new one.
        connection.close()
        step_fail(step=step, error=f"timed out after {task.request.timelimit[1]:g} s")
    except SkillError as exc:
        step_fail(step=step, error=str(exc), traceback=traceback.format_exc(),
                  retryable=exc.retryable)  # fmt: skip
    except Exception as exc:
        # A skill's unexpected exception is a failed try, not a crashed agent.
        step_fail(step=step, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    else:
        try:
            json.dumps(output)
        except (TypeError, ValueError) as exc:
            # The same skill would return the same thing again: no retry.
            step_fail(step=step, error=f"output is not JSON: {exc}", retryable=False)
        else:
            step_succeed(step=step, output=output, here=here)


@shared_task(name="coordination.reap_task", acks_late=False, ignore_result=True)
def reap_task() -> dict | None:
    """A pass an older coordinator's beat sent (the leader now runs it itself): only the
    leader runs it; anywhere else it does nothing, as a deposed leader's pass must."""
    return reap_pass() if leading() else None
