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

from sqlalchemy import BigInteger, Select, String, case, cast, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market import ledger
from market.models import (
    DailyAnalytics,
    DailyUserAnalytics,
    Job,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    MediaFile,
    MercadoPagoNotification,
    Purchase,
    User,
    WebhookDelivery,
)
from market.models.base import utcnow
from market.purchases import REVERSED

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


# Seconds from a payment's first notification to its credit, over this recent window.
LAG_WINDOW = timedelta(hours=1)


def operations_gauges(session: Session) -> Gauges:
    """Jobs by kind and state, payment lag, deliveries by outcome, ledger totals (now)."""
    jobs = session.execute(
        select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
    ).all()
    return {
        "spartan_jobs": ("Jobs by kind and state", ["kind", "state"], [tuple(r) for r in jobs]),
        **_ledger_gauges(session),
        **_payment_lag_gauges(session),
        **_delivery_gauges(session),
    }


def _ledger_gauges(session: Session) -> Gauges:
    """Credits held in user wallets (in circulation) and each system account's balance.

    Wallet balances are kept by a trigger, so their sum is cheap. System accounts are not
    kept (a hot row every posting would serialise on): their balance is the sum of their
    entries, read through the (account_id, id) index. The two sides add up to zero.
    """
    wallets = session.execute(
        select(func.coalesce(func.sum(LedgerAccount.balance), 0)).where(
            LedgerAccount.kind == "user"
        )
    ).scalar_one()
    system = dict.fromkeys(ledger.SYSTEM_ACCOUNTS, 0)
    totals = session.execute(
        select(LedgerAccount.code, func.sum(LedgerEntry.amount))
        .join(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
        .where(LedgerAccount.kind == "system")
        .group_by(LedgerAccount.code)
    )
    system.update({code: total for code, total in totals})
    return {
        "spartan_ledger_wallet_credits": (
            "Credits held in user wallets (credits in circulation)",
            [],
            [(int(wallets),)],
        ),
        "spartan_ledger_system_account_credits": (
            "Balance of each system account of the ledger (sum of its entries)",
            ["account"],
            [(code, int(total)) for code, total in sorted(system.items())],
        ),
    }


def _payment_lag_gauges(session: Session) -> Gauges:
    """How long MercadoPago's word takes to become credits, and whether the inbox is stuck.

    Lag: for each purchase credited in the last hour, seconds from the first notification of
    its payment to the credit (p50, p95 and max; no samples when nothing was credited by a
    webhook). Purchases settled by reconciliation without a notification have no lag.
    Backlog: inbox rows not processed yet, and the age of the oldest (0 when none).
    """
    since = utcnow() - LAG_WINDOW
    payment_ref = cast(Purchase.payment_id, String)  # the inbox keeps MercadoPago's id as text
    recent = select(payment_ref).where(Purchase.approved_at >= since)
    first_seen = (
        select(
            MercadoPagoNotification.data_id,
            func.min(MercadoPagoNotification.received_at).label("received_at"),
        )
        .where(MercadoPagoNotification.data_id.in_(recent))
        .group_by(MercadoPagoNotification.data_id)
        .subquery()
    )
    lag = func.extract("epoch", Purchase.approved_at - first_seen.c.received_at)
    stats = session.execute(
        select(
            func.count(),
            func.percentile_cont(0.5).within_group(lag),
            func.percentile_cont(0.95).within_group(lag),
            func.max(lag),
        )
        .select_from(Purchase)
        .join(first_seen, first_seen.c.data_id == payment_ref)
        .where(Purchase.approved_at >= since, first_seen.c.received_at <= Purchase.approved_at)
    ).one()
    count, p50, p95, worst = stats
    backlog, oldest = session.execute(
        select(func.count(), func.min(MercadoPagoNotification.received_at)).where(
            MercadoPagoNotification.processed_at.is_(None)
        )
    ).one()
    oldest_age = (utcnow() - oldest).total_seconds() if oldest else 0.0
    return {
        "spartan_payment_credit_lag_seconds": (
            "Seconds from a payment's first MercadoPago notification to its credit, over "
            "purchases credited in the last hour",
            ["stat"],
            [("p50", p50), ("p95", p95), ("max", worst)] if count else [],
        ),
        "spartan_payment_credit_lag_samples": (
            "Purchases credited from a notification in the last hour (the lag's sample size)",
            [],
            [(count,)],
        ),
        "spartan_mercadopago_inbox_unprocessed": (
            "MercadoPago notifications received and not processed yet",
            [],
            [(backlog,)],
        ),
        "spartan_mercadopago_inbox_oldest_unprocessed_age_seconds": (
            "Age of the oldest unprocessed MercadoPago notification (0 when none)",
            [],
            [(max(oldest_age, 0.0),)],
        ),
    }


def _delivery_gauges(session: Session) -> Gauges:
    """Outgoing webhook deliveries by event type and state (pending, succeeded, failed)."""
    rows = session.execute(
        select(WebhookDelivery.event_type, WebhookDelivery.state, func.count()).group_by(
            WebhookDelivery.event_type, WebhookDelivery.state
        )
    ).all()
    return {
        "spartan_webhook_deliveries": (
            "Outgoing webhook deliveries by event type and state",
            ["event_type", "state"],
            [tuple(r) for r in rows],
        ),
    }
