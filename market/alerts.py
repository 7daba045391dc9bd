"""Alert rules: readings against thresholds; a breach notifies every admin once, and again
when it recovers.

The state of each rule is a row of `alert_states`, locked while it changes, and the admins'
notifications are written in the same transaction with dedupe keys derived from the start
of the breach: a rerun, a retried task or two evaluators at once cannot notify twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market import notifications
from market.config import Settings
from market.models import AlertState, User
from market.models.base import utcnow


@dataclass(frozen=True)
class Rule:
    name: str
    setting: str
    # "above": breached when the reading exceeds the threshold; "below": when it falls short.
    direction: str
    unit: str


RULES = (
    Rule("error_rate", "alert_error_rate", "above", "of requests answered 5xx"),
    Rule("p95_ms", "alert_p95_ms", "above", "ms p95 latency"),
    Rule("queue_depth", "alert_queue_depth", "above", "messages waiting in one queue"),
    Rule("oldest_message_s", "alert_oldest_message_s", "above", "s the oldest message waited"),
    Rule("failed_jobs", "alert_failed_jobs", "above", "jobs failed in the last hour"),
    Rule("workers_min", "alert_workers_min", "below", "workers answering"),
    Rule("disk_free_pct", "alert_disk_free_pct", "below", "% free on the media disk"),
)


@dataclass(frozen=True)
class Change:
    rule: str
    kind: str  # "alert.triggered" | "alert.resolved"
    value: float | None
    threshold: float
    breach_started_at: datetime


def thresholds(settings: Settings) -> dict[str, float]:
    return {rule.name: float(getattr(settings, rule.setting)) for rule in RULES}


def is_breached(rule: Rule, value: float, threshold: float) -> bool:
    return value > threshold if rule.direction == "above" else value < threshold


def evaluate(
    session: Session,
    *,
    readings: Mapping[str, float | None],
    limits: Mapping[str, float],
    now: datetime | None = None,
) -> list[Change]:
    """Apply the readings (None: not measurable now, state kept); notify what changed."""
    now = now or utcnow()
    names = [rule.name for rule in RULES if rule.name in readings]
    if not names:
        return []
    session.execute(
        insert(AlertState)
        .values([{"rule": name, "evaluated_at": now} for name in names])
        .on_conflict_do_nothing(index_elements=[AlertState.rule])
    )
    # One lock order (by rule name) so concurrent evaluators cannot deadlock.
    states = {
        s.rule: s
        for s in session.execute(
            select(AlertState)
            .where(AlertState.rule.in_(names))
            .order_by(AlertState.rule)
            .with_for_update()
        ).scalars()
    }
    changes: list[Change] = []
    for rule in RULES:
        if rule.name not in readings:
            continue
        state, value, limit = states[rule.name], readings[rule.name], limits[rule.name]
        state.evaluated_at, state.threshold = now, limit
        if value is None:
            continue
        state.last_value = value
        breached = is_breached(rule, value, limit)
        if breached and state.breach_started_at is None:
            state.breach_started_at = now
            changes.append(Change(rule.name, "alert.triggered", value, limit, now))
        elif not breached and state.breach_started_at is not None:
            changes.append(
                Change(rule.name, "alert.resolved", value, limit, state.breach_started_at)
            )
            state.breach_started_at = None
    for change in changes:
        _notify_admins(session, change)
    return changes


def _notify_admins(session: Session, change: Change) -> int:
    rule = next(r for r in RULES if r.name == change.rule)
    started = change.breach_started_at.isoformat()
    prefix = "alert" if change.kind == "alert.triggered" else "alert-resolved"
    if change.kind == "alert.triggered":
        title = f"Alert: {rule.name} {change.value:g} {rule.unit} (limit {change.threshold:g})"
    else:
        title = f"Resolved: {rule.name} back to {change.value:g} {rule.unit}"
    data: dict[str, Any] = {
        "rule": rule.name,
        "value": change.value,
        "threshold": change.threshold,
        "direction": rule.direction,
        "breach_started_at": started,
    }
    sent = 0
    admins = session.execute(select(User.id).where(User.is_admin.is_(True))).scalars()
    for admin_id in admins:
        # dedupe_key is unique across the inbox, so it names the admin too.
        sent += notifications.record(
            session,
            user_id=admin_id,
            kind=change.kind,
            title=title,
            dedupe_key=f"{prefix}:{rule.name}:{started}:{admin_id}",
            data=data,
        )
    return sent


def current_states(session: Session) -> list[AlertState]:
    return list(session.execute(select(AlertState).order_by(AlertState.rule)).scalars())
