"""Celery signal handlers: log set-up, and the request/job/task ids in every task's logs.

The publisher (web or worker) puts its request id and the send time in the message headers;
the worker binds request id and task id before the task body runs and unbinds after (the job
id is bound by StepTask, which reads it when it finds the task's step),
so the lines of one purchase carry one request id from the HTTP request to the last step.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.signals import (
    beat_init,
    before_task_publish,
    heartbeat_sent,
    setup_logging,
    task_postrun,
    task_prerun,
)
from kombu.exceptions import OperationalError

from market import logging as log_context
from market.ops import health
from market.ops.health import SENT_AT_HEADER
from workers import runtime

REQUEST_ID_HEADER = "spartan_request_id"
log = logging.getLogger(__name__)

_tokens: dict[str, Any] = {}


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connected, so Celery leaves the root logger to us (worker and beat alike).
    settings = runtime.settings()
    log_context.configure(level=settings.log_level, json_lines=settings.log_json)


@before_task_publish.connect
def _stamp_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    request_id = log_context.current().get("request_id")
    if request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id
    # Lets the oldest waiting message's age be read off the queue (alerts, health).
    headers.setdefault(SENT_AT_HEADER, time.time())


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not task_id or task is None:
        return
    request = task.request
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (request.headers or {}).get(
        REQUEST_ID_HEADER
    )
    # The job id is bound by StepTask once it has found the task's step (workers/base.py).
    _tokens[task_id] = log_context.bind(request_id=request_id, task_id=task_id, task_name=task.name)


@task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id or "", None)
    if token is None:
        return
    try:
        log_context.reset(token)
    except ValueError:  # bound in another context: start the next task clean
        log_context.clear()


@heartbeat_sent.connect
def _record_heartbeat(sender: Any = None, **_: Any) -> None:
    """Each Celery heartbeat (every 2 s) also lands in Redis, so /metrics can show which
    workers are alive without broadcasting a ping at every scrape (a killed worker stops)."""
    try:
        worker = sender.eventer.hostname
        health.record_worker_heartbeat(
            runtime.redis_client(), runtime.settings().key_prefix, worker
        )
    except (redis.RedisError, AttributeError) as exc:  # never break the heartbeat itself
        log.debug("worker heartbeat not recorded: %s", exc)


@beat_init.connect
def _first_beat_heartbeat(sender: Any = None, **_: Any) -> None:
    """A (re)started beat sends its heartbeat at once, as its schedule entry says to, rather
    than one interval later: health stops reporting beat as down as soon as it is back."""
    from beat_schedule import SCHEDULE

    entry = SCHEDULE["beat-heartbeat"]
    try:
        sender.app.send_task(entry["task"], **entry["options"])
    except OperationalError as exc:  # the broker is not up yet: the schedule sends it next
        log.warning("first beat heartbeat not sent: %s", exc)
