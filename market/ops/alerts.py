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
from market.db import lock_in_key_order
from market.errors import NotFoundError, ValidationError
from market.identity import admins
from market.models import AlertState, AlertThreshold, AlertThresholdChange, User
from market.models.base import utcnow


@dataclass(frozen=True)
class Rule:
    name: str
    setting: str
    # "above": breached when the reading exceeds the threshold; "below": when it falls short.
    direction: str
    unit: str
    # The thresholds an admin may set (inclusive); whole numbers only where `integral`.
    minimum: float = 0.0
    maximum: float | None = None
    integral: bool = False


RULES = (
    Rule("error_rate", "alert_error_rate", "above", "of requests answered 5xx", maximum=1.0),
    Rule("p95_ms", "alert_p95_ms", "above", "ms p95 latency"),
    Rule(
        "queue_depth", "alert_queue_depth", "above", "messages waiting in one queue", integral=True
    ),
    Rule("oldest_message_s", "alert_oldest_message_s", "above", "s the oldest message waited"),
    Rule(
        "failed_jobs", "alert_failed_jobs", "above", "jobs failed in the last hour", integral=True
    ),
    Rule("workers_min", "alert_workers_min", "below", "workers answering", integral=True),
    Rule(
        "disk_free_pct", "alert_disk_free_pct", "below", "% free on the media disk", maximum=100.0
    ),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}


@dataclass(frozen=True)
class Change:
    rule: str
    kind: str  # "alert.triggered" | "alert.resolved"
    value: float | None
    threshold: float
    breach_started_at: datetime


def thresholds(settings: Settings) -> dict[str, float]:
    """The defaults, from the environment (ALERT_* variables)."""
    return {rule.name: float(getattr(settings, rule.setting)) for rule in RULES}


def effective_thresholds(session: Session, settings: Settings) -> dict[str, float]:
    """The thresholds in force: an admin's stored value where one is set, else the default."""
    limits = thresholds(settings)
    stored = session.execute(select(AlertThreshold.rule, AlertThreshold.threshold)).all()
    limits.update({rule: value for rule, value in stored if rule in limits})
    return limits


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
    states = lock_in_key_order(session, AlertState.rule, names)
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
            state.breach_started_at = state.last_fired_at = now
            changes.append(Change(rule.name, "alert.triggered", value, limit, now))
        elif not breached and state.breach_started_at is not None:
            changes.append(
                Change(rule.name, "alert.resolved", value, limit, state.breach_started_at)
            )
            state.breach_started_at = None
            state.last_recovered_at = now
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
    # Only admins whose rights hold without a token: a revoked admin, or one whose last proof
    # expired and whom no operator lists, is not told (market/identity/admins.py).
    for admin_id in session.execute(select(User.id).where(admins.in_force())).scalars():
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


# Operators: the rules' state and their thresholds, changed at run time --------------------


def overview(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every rule: threshold in force (and where it comes from), last reading, firing or not,
    when it last fired and recovered, who last set its threshold."""
    defaults = thresholds(settings)
    states = {s.rule: s for s in current_states(session)}
    stored = {t.rule: t for t in session.execute(select(AlertThreshold)).scalars()}
    rows = []
    for rule in RULES:
        state, custom = states.get(rule.name), stored.get(rule.name)
        rows.append(
            {
                "rule": rule.name,
                "direction": rule.direction,
                "unit": rule.unit,
                "threshold": custom.threshold if custom else defaults[rule.name],
                "default_threshold": defaults[rule.name],
                "threshold_source": "admin" if custom else "environment",
                "threshold_updated_by": custom.updated_by if custom else None,
                "threshold_updated_at": custom.updated_at if custom else None,
                "value": state.last_value if state else None,
                "evaluated_at": state.evaluated_at if state else None,
                "firing": bool(state and state.breach_started_at),
                "firing_since": state.breach_started_at if state else None,
                "last_fired_at": state.last_fired_at if state else None,
                "last_recovered_at": state.last_recovered_at if state else None,
            }
        )
    return rows


def check_threshold(rule: Rule, value: float) -> None:
    """ValidationError unless `value` is a threshold the rule can take."""
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise ValidationError(f"{rule.name}: the threshold must be a finite number")
    if value < rule.minimum or (rule.maximum is not None and value > rule.maximum):
        upper = f"{rule.maximum:g}" if rule.maximum is not None else "any"
        raise ValidationError(
            f"{rule.name}: the threshold must be between {rule.minimum:g} and {upper}"
        )
    if rule.integral and value != int(value):
        raise ValidationError(f"{rule.name}: the threshold must be a whole number")


def set_threshold(
    session: Session,
    *,
    rule: str,
    threshold: float | None,
    by: User,
    settings: Settings,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Store an admin's threshold for `rule` (None: back to the environment default) and
    record who changed it, when, from what. The next evaluation uses it. A change to the
    value already in force records nothing."""
    found = RULES_BY_NAME.get(rule)
    if found is None:
        raise NotFoundError(f"no alert rule named {rule!r}", rules=sorted(RULES_BY_NAME))
    if threshold is not None:
        check_threshold(found, float(threshold))
    now = now or utcnow()
    # Locked so two admins at once are audited in the order they were applied.
    current = session.get(AlertThreshold, rule, with_for_update=True)
    old = current.threshold if current else None
    if old == threshold:
        return next(r for r in overview(session, settings) if r["rule"] == rule)
    if threshold is None:
        session.delete(current)
    elif current is None:
        session.add(
            AlertThreshold(rule=rule, threshold=float(threshold), updated_by=by.id, updated_at=now)
        )
    else:
        current.threshold, current.updated_by, current.updated_at = float(threshold), by.id, now
    session.add(
        AlertThresholdChange(
            rule=rule,
            old_threshold=old,
            new_threshold=None if threshold is None else float(threshold),
            changed_by=by.id,
            changed_by_uid=by.firebase_uid,
            changed_at=now,
        )
    )
    session.flush()
    return next(r for r in overview(session, settings) if r["rule"] == rule)


def threshold_changes(session: Session, *, limit: int = 50) -> list[AlertThresholdChange]:
    """The most recent threshold changes, newest first (the audit)."""
    return list(
        session.execute(
            select(AlertThresholdChange).order_by(AlertThresholdChange.id.desc()).limit(limit)
        ).scalars()
    )
