"""The Celery app (`celery -A workers.app`). Configuration is read lazily, on first use."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from workers import runtime

QUEUES = ("payments", "media", "notifications", "maintenance")
TASK_MODULES = (
    "workers.payments",
    "workers.media",
    "workers.notifications",
    "workers.maintenance",
)


def queue_name(queue: str) -> str:
    return runtime.settings().celery_queue_prefix + queue


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    """Route `<queue>.<verb>_<object>` to its queue by the name's prefix."""
    prefix = name.split(".", 1)[0]
    if prefix in QUEUES:
        return {"queue": queue_name(prefix), "routing_key": queue_name(prefix)}
    return None


def _config() -> dict[str, Any]:
    s = runtime.settings()
    from beat_schedule import SCHEDULE

    transport: dict[str, Any] = {"visibility_timeout": 3600}
    if s.celery_queue_prefix and s.celery_broker_url.startswith("redis"):
        # Keeps a test run's messages (and its event fanout) away from any other worker.
        transport["global_keyprefix"] = s.celery_queue_prefix
    return {
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
        "task_queues": [Queue(queue_name(q), routing_key=queue_name(q)) for q in QUEUES],
        "task_default_queue": queue_name("maintenance"),
        "task_routes": (route_task,),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_time_limit": 300,
        "task_soft_time_limit": 240,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_expires": 24 * 3600,
        "beat_schedule": SCHEDULE,
        "worker_hijack_root_logger": False,
    }


app = Celery("spartan", include=list(TASK_MODULES))
app.add_defaults(_config)

from workers import observability  # noqa: E402, F401  (signal handlers: log context of tasks)
