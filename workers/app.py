"""The Celery app (`celery -A workers.app`). Configuration is read lazily, on first use."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from market.config import Settings
from workers import runtime

QUEUES = ("payments", "media", "notifications", "maintenance")
# By name: the workflow-side task modules (they start workflows, so workers may not import
# them) are included here without an import.
TASK_MODULES = (
    "workers.payments",
    "workers.media",
    "workers.notifications",
    "workers.maintenance.jobs",
    "workers.maintenance.alerts",
    "workers.maintenance.purges",
    "workers.maintenance.analytics",
    "workers.maintenance.ledger",
    "workers.maintenance.media",
    "workflows.payment_events",
    "workflows.sweeps",
)


def queue_name(queue: str, prefix: str | None = None) -> str:
    """The broker name of `queue`: this deployment's prefix (or `prefix`) + the queue."""
    return (runtime.settings().celery_queue_prefix if prefix is None else prefix) + queue


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    """Route `<queue>.<verb>_<object>` to its queue by the name's prefix."""
    prefix = name.split(".", 1)[0]
    if prefix in QUEUES:
        return {"queue": queue_name(prefix), "routing_key": queue_name(prefix)}
    return None


def _isolation(s: Settings) -> dict[str, Any]:
    """Settings that keep a prefixed deployment's broker traffic away from any other one's.

    Queue names carry the prefix on every broker. On Redis `global_keyprefix` also prefixes
    the broadcast (control) and event channels; AMQP has no such option, so there the control
    and event exchanges are named after the prefix, else `inspect()` would count every
    worker on the vhost and monitors would see every deployment's events.
    """
    prefix = s.celery_queue_prefix
    if not prefix:
        return {}
    if s.celery_broker_url.startswith("redis"):
        return {"broker_transport_options": {"global_keyprefix": prefix}}
    return {"control_exchange": f"{prefix}celery", "event_exchange": f"{prefix}celeryev"}


def task_queues(s: Settings) -> list[Queue]:
    """The four queues of deployment `s` (x-expires on AMQP when it asks for it)."""
    expires = s.celery_queue_expires_s or None
    return [
        Queue(
            queue_name(q, s.celery_queue_prefix),
            routing_key=queue_name(q, s.celery_queue_prefix),
            expires=expires,
        )
        for q in QUEUES
    ]


def config_for(s: Settings) -> dict[str, Any]:
    """The Celery configuration of deployment `s` (tests build another run's from it)."""
    from beat_schedule import SCHEDULE

    # Redis only: an unacked message is redelivered after this long. AMQP redelivers it as soon
    # as the worker's connection drops (and retry countdowns stay far below RabbitMQ's
    # consumer_timeout: workers.base caps backoff at 300 s).
    transport: dict[str, Any] = {"visibility_timeout": 3600}
    isolation = _isolation(s)
    transport.update(isolation.pop("broker_transport_options", {}))
    return {
        **isolation,
        "broker_url": s.celery_broker_url,
        "result_backend": s.celery_result_backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": (
            {"global_keyprefix": s.celery_queue_prefix} if s.celery_queue_prefix else {}
        ),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": task_queues(s),
        "task_default_queue": queue_name("maintenance", s.celery_queue_prefix),
        "task_routes": (route_task,),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A late-acked task still running when the broker connection drops is redelivered
        # anyway (or, on a broker that lost its data, finished by beat's sweeps): cancel it
        # rather than let it run twice (Celery 6 makes this the default; tasks are idempotent).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_track_started": True,
        "task_time_limit": 300,
        "task_soft_time_limit": 240,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        # No task-sent event: it would be a second publish (to the event exchange) on every
        # send, the webhook's included. Flower builds its task list from the worker's events
        # (received, started, succeeded…); only the "sent" timestamp stays empty.
        "task_send_sent_event": False,
        "result_expires": 24 * 3600,
        "beat_schedule": SCHEDULE,
        "worker_hijack_root_logger": False,
    }


def _config() -> dict[str, Any]:
    return config_for(runtime.settings())


# No fix-ups: Celery's only built-in one is Django's (not used here), and importing it loads
# the worker's whole machinery (celery.worker) into every process that only sends tasks.
app = Celery("spartan", include=list(TASK_MODULES), fixups=[])
app.add_defaults(_config)

from workers import observability  # noqa: E402, F401  (signal handlers: log context of tasks)
