"""The daily analytics roll-up."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from market.models.base import utcnow
from market.ops import analytics
from workers import runtime
from workers.app import app
from workers.base import StepTask
from workers.maintenance.locks import singleton


@app.task(base=StepTask, name="maintenance.rollup_analytics")
def rollup_analytics(*, day: str | None = None) -> dict[str, Any]:
    """Recompute the daily analytics of `day` (ISO date), or of yesterday and today (rerunnable)."""
    today = utcnow().date()
    days = [date.fromisoformat(day)] if day else [today - timedelta(days=1), today]
    with singleton("rollup_analytics", ttl_s=30 * 60) as acquired:
        if not acquired:
            return {"skipped": "another roll-up is running"}
        done = []
        for one in days:
            with runtime.transaction() as session:
                done.append(analytics.rollup_day(session, one))
    return {"days": done}
