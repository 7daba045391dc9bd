"""Aggregates over the business tables: the daily roll-up, a user's report, /metrics gauges.

The roll-up of a day recomputes that day from the source tables and writes it whole: per
(day, user) rows are upserted and rows of users with nothing left that day are deleted, then
the day's totals row is upserted. Rerunning it for any past day gives the same numbers, and
two runs for the same day are serialised by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.models import DailyAnalytics, DailyUserAnalytics, Job, User
from market.models.base import utcnow

Gauges = dict[str, tuple[str, list[str], list[Any]]]


@dataclass
class Figures:
    purchases: int = 0
    revenue_ars: Decimal = Decimal("0")
    credits_bought: int = 0
    credits_spent: int = 0
    refunds: int = 0
    refunded_ars: Decimal = Decimal("0")
    avatar_uploads: int = 0

    def add(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, getattr(self, name) + (value or 0))

    def merge(self, other: Figures) -> None:
        self.add(**other.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def any(self) -> bool:
        return any(self.as_dict().values())


FIGURES = tuple(f.name for f in fields(Figures))

# A source yields (user_id, {figure: value}) for the half-open interval [start, end).
Source = Callable[[Session, datetime, datetime], Iterable[tuple[uuid.UUID, dict[str, Any]]]]
SOURCES: list[Source] = []


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _active_by_jobs(session: Session, start: datetime, end: datetime) -> set[uuid.UUID]:
    """Users who started any workflow that day (purchases, uploads, refunds…)."""
    return set(
        session.execute(
            select(Job.owner_id)
            .where(Job.created_at >= start, Job.created_at < end, Job.owner_id.is_not(None))
            .distinct()
        ).scalars()
    )


def rollup_day(session: Session, day: date) -> dict[str, Any]:
    """Recompute one UTC day's per-user and total figures (idempotent; the caller commits)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"rollup:{day}"})
    start, end = _day_bounds(day)
    per_user: dict[uuid.UUID, Figures] = {}
    for source in SOURCES:
        for user_id, values in source(session, start, end):
            per_user.setdefault(user_id, Figures()).add(**values)
    per_user = {uid: f for uid, f in per_user.items() if f.any()}
    now = utcnow()
    if per_user:
        stmt = insert(DailyUserAnalytics).values(
            [
                {"day": day, "user_id": uid, "computed_at": now, **f.as_dict()}
                for uid, f in per_user.items()
            ]
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[DailyUserAnalytics.day, DailyUserAnalytics.user_id],
                set_={name: stmt.excluded[name] for name in (*FIGURES, "computed_at")},
            )
        )
    stale = delete(DailyUserAnalytics).where(DailyUserAnalytics.day == day)
    if per_user:
        stale = stale.where(DailyUserAnalytics.user_id.not_in(list(per_user)))
    session.execute(stale)
    totals = Figures()
    for f in per_user.values():
        totals.merge(f)
    active = len(set(per_user) | _active_by_jobs(session, start, end))
    row = {"day": day, "active_users": active, "computed_at": now, **totals.as_dict()}
    stmt = insert(DailyAnalytics).values(row)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[DailyAnalytics.day],
            set_={k: stmt.excluded[k] for k in row if k != "day"},
        )
    )
    return {
        "day": day.isoformat(),
        "users": len(per_user),
        "active_users": active,
        **{k: str(v) if isinstance(v, Decimal) else v for k, v in totals.as_dict().items()},
    }


def user_report(
    session: Session, *, user_id: uuid.UUID, since: date, until: date
) -> dict[str, Any] | None:
    """Totals and a dense per-day series for [since, until]; None if the user does not exist."""
    if session.get(User, user_id) is None:
        return None
    rows = {
        r.day: r
        for r in session.execute(
            select(DailyUserAnalytics).where(
                DailyUserAnalytics.user_id == user_id,
                DailyUserAnalytics.day >= since,
                DailyUserAnalytics.day <= until,
            )
        ).scalars()
    }
    totals, days = Figures(), []
    for offset in range((until - since).days + 1):
        day = since + timedelta(days=offset)
        row = rows.get(day)
        figures = Figures(**{n: getattr(row, n) for n in FIGURES}) if row else Figures()
        totals.merge(figures)
        days.append({"day": day, **figures.as_dict()})
    computed = max((r.computed_at for r in rows.values()), default=None)
    return {
        "user_id": user_id,
        "since": since,
        "until": until,
        "totals": {**totals.as_dict(), "active_days": len(rows)},
        "days": days,
        "computed_at": computed,
    }


def operations_gauges(session: Session) -> Gauges:
    """Jobs by kind and state, payment lag, deliveries by outcome, ledger totals (now)."""
    jobs = session.execute(
        select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
    ).all()
    return {
        "spartan_jobs": ("Jobs by kind and state", ["kind", "state"], [tuple(r) for r in jobs]),
    }
