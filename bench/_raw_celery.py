"""The baseline: a plain Celery app, no Django and no Hive, with the same reliability
settings as Hive's (acks late, prefetch 1, JSON) on the same broker."""

import os

from celery import Celery

app = Celery("raw", broker=os.environ["BENCH_BROKER_URL"], backend=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="bench.raw",
)


@app.task(name="raw.noop")
def noop() -> None:
    return None
