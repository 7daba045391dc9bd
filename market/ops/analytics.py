"""Aggregates over the business tables: the daily roll-up and a user's report.

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

from sqlalchemy import BigInteger, Select, case, cast, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.models import (
    DailyAnalytics,
    DailyUserAnalytics,
    Job,
    LedgerTransaction,
    MediaFile,
    Purchase,
    User,
)
from market.models.base import utcnow
from market.payments.purchases import REVERSED

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
Sourced = tuple[uuid.UUID, dict[str, Any]]
Source = Callable[[Session, datetime, datetime], Iterable[Sourced]]


def _grouped(session: Session, stmt: Select[Any]) -> list[Sourced]:
    """The rows of a query grouped by user (its `user_id` column) as (user_id, {figure: value})."""
    return [
        (row.user_id, {k: v for k, v in row._mapping.items() if k != "user_id"})
        for row in session.execute(stmt)
    ]


def _ars(amount: Any) -> Any:
    """`amount` when the purchase was in ARS, else 0: revenue figures are in pesos only."""
    return case((Purchase.currency == "ARS", amount), else_=0)


def purchases_credited(session: Session, start: datetime, end: datetime) -> list[Sourced]:
    """Purchases counted on the day their payment was credited (`approved_at`, set once with
    the sale's ledger posting): revenue is the purchase's price, credits its package's."""
    return _grouped(
        session,
        select(
            Purchase.user_id,
            func.count().label("purchases"),
            func.sum(_ars(Purchase.amount)).label("revenue_ars"),
            func.sum(Purchase.credits).label("credits_bought"),
        )
        .where(
            Purchase.approved_at >= start,
            Purchase.approved_at < end,
            Purchase.payment_id.is_not(None),
        )
        .group_by(Purchase.user_id),
    )


def purchases_reversed(session: Session, start: datetime, end: datetime) -> list[Sourced]:
    """Credited purchases whose money went back to the buyer that day (`reversed_at`): admin
    refunds once MercadoPago completed them, refunds from MercadoPago's panel, chargebacks.
    Automatic refunds of payments no purchase took are not here: they were never revenue."""
    return _grouped(
        session,
        select(
            Purchase.user_id,
            func.count().label("refunds"),
            func.sum(_ars(Purchase.amount)).label("refunded_ars"),
        )
        .where(
            Purchase.status.in_(REVERSED),
            Purchase.reversed_at >= start,
            Purchase.reversed_at < end,
        )
        .group_by(Purchase.user_id),
    )


def credits_spent(session: Session, start: datetime, end: datetime) -> list[Sourced]:
    """Credits users spent that day: the wallet debits of the ledger's `spend` transactions."""
    return _grouped(
        session,
        select(
            LedgerTransaction.user_id,
            cast(-func.sum(LedgerTransaction.user_delta), BigInteger).label("credits_spent"),
        )
        .where(
            LedgerTransaction.kind == "spend",
            LedgerTransaction.created_at >= start,
            LedgerTransaction.created_at < end,
        )
        .group_by(LedgerTransaction.user_id),
    )


def avatar_uploads(session: Session, start: datetime, end: datetime) -> list[Sourced]:
    """Avatar uploads accepted that day (a refused file leaves no row; presets are not uploads)."""
    return _grouped(
        session,
        select(MediaFile.user_id, func.count().label("avatar_uploads"))
        .where(MediaFile.created_at >= start, MediaFile.created_at < end)
        .group_by(MediaFile.user_id),
    )


# One grouped query per source and day; together they fill every figure of `Figures`.
SOURCES: list[Source] = [purchases_credited, purchases_reversed, credits_spent, avatar_uploads]


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
