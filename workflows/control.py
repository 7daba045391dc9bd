"""What operators and health checks ask of the Celery side: live workers and their queues."""

from __future__ import annotations

from typing import Any

from workers.app import QUEUES, app, queue_name


def workers_check(timeout_s: float = 1.0) -> dict[str, Any]:
    """Ping the workers; raises when no worker answers. Reports which queues have consumers."""
    inspector = app.control.inspect(timeout=timeout_s)
    active = inspector.active_queues() or {}
    if not active:
        raise RuntimeError("no worker answered")
    consumed = {q["name"] for queues in active.values() for q in queues}
    per_queue = {
        q: sum(1 for qs in active.values() if any(x["name"] == queue_name(q) for x in qs))
        for q in QUEUES
    }
    missing = [q for q in QUEUES if queue_name(q) not in consumed]
    return {"workers": len(active), "per_queue": per_queue, "queues_without_workers": missing}
