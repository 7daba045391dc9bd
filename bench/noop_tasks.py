"""The bare Celery baseline: no-op steps on the project's broker and worker settings.

    celery -A bench.noop_tasks worker --concurrency 2 -E

Same broker, result backend, serializer, acks_late, prefetch, events and queue prefix as
`workers.app`; only the tasks (which do nothing) and the queue (its own) differ.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from workers import app as project

QUEUE = "bench_noop"


def _config() -> dict[str, Any]:
    config = project._config()
    config.pop("beat_schedule", None)
    name = project.queue_name(QUEUE)
    config["task_queues"] = [Queue(name, routing_key=name)]
    config["task_default_queue"] = name
    return config


app = Celery("bench-noop")
app.add_defaults(_config)


@app.task(name="bench.noop_step", acks_late=True, reject_on_worker_lost=True)
def noop_step() -> None:
    """Nothing: the cost of a step is then only Celery's (broker, worker, result backend)."""
