"""What /metrics reads from the database at scrape time: jobs, ledger totals, payment lag and
payment-event backlog, outgoing webhook deliveries and their recent attempts.

Every read is bounded, whatever the size of the tables behind it: jobs and deliveries are
counted on write (row_counts) and the system accounts' balances kept as running totals
(market.ledger), both by triggers of migration 0012; the rest reads recent rows or the
unprocessed ones through an index (bench/growth.py shows each plan at 1M rows).

Each function answers {metric: (help, label names, rows)}; the web layer turns them into
Prometheus gauge families (market.ops.metrics.GaugeCollector).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, select, text
from sqlalchemy.orm import Session

from market import ledger
from market.models import (
    PaymentEvent,
    Purchase,
    RowCount,
    WebhookDeliveryAttempt,
)
from market.models.base import utcnow

Gauges = dict[str, tuple[str, list[str], list[Any]]]

# Tables whose rows are counted on write by label pair (migration 0012's triggers).
COUNTED = ("jobs", "webhook_deliveries")


def counts(session: Session, table: str) -> list[tuple[str, str, int]]:
    """(label, label, rows) of a counted table: its jobs by kind and state, or its
    deliveries by event type and state, summed over the slots of row_counts (a few rows per
    group, whatever the table's size). Groups with no row are left out."""
    total = func.sum(RowCount.n)
    rows = session.execute(
        select(RowCount.k1, RowCount.k2, total)
        .where(RowCount.tbl == table)
        .group_by(RowCount.k1, RowCount.k2)
        .having(total != 0)
        .order_by(RowCount.k1, RowCount.k2)
    ).all()
    return [(k1, k2, int(n)) for k1, k2, n in rows]


def fold_counts(session: Session) -> int:
    """Fold the row-count slots of backends not writing right now into slot 0 (the sums are
    unchanged, the rows a scrape sums stay few), and drop groups that are empty; how many
    slots were folded. Safe to run at any time and concurrently (one folder at a time; a
    slot in use is skipped)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('row_counts'))"))
    folded = session.execute(
        text(
            """WITH gone AS (
                DELETE FROM row_counts WHERE (tbl, k1, k2, slot) IN (
                    SELECT tbl, k1, k2, slot FROM row_counts WHERE slot <> 0
                    FOR UPDATE SKIP LOCKED)
                RETURNING tbl, k1, k2, n),
            folded AS (
                INSERT INTO row_counts AS c (tbl, k1, k2, slot, n)
                SELECT tbl, k1, k2, 0, sum(n) FROM gone GROUP BY tbl, k1, k2
                ON CONFLICT (tbl, k1, k2, slot) DO UPDATE SET n = c.n + EXCLUDED.n)
            SELECT count(*) FROM gone"""
        )
    ).scalar_one()
    # A group emptied (all its rows purged) keeps a zero in slot 0: gone once nothing else
    # of it is left.
    session.execute(
        text(
            """DELETE FROM row_counts z WHERE z.slot = 0 AND z.n = 0 AND NOT EXISTS (
                SELECT 1 FROM row_counts o
                WHERE (o.tbl, o.k1, o.k2) = (z.tbl, z.k1, z.k2) AND o.slot <> 0)"""
        )
    )
    return int(folded)


# Seconds from a payment's first notification to its credit, over this recent window.
LAG_WINDOW = timedelta(hours=1)


def operations_gauges(session: Session) -> Gauges:
    """Jobs by kind and state, payment lag, deliveries by outcome, ledger totals (now)."""
    return {
        "spartan_jobs": ("Jobs by kind and state", ["kind", "state"], counts(session, "jobs")),
        **_ledger_gauges(session),
        **_payment_lag_gauges(session),
        **_delivery_gauges(session),
        **_attempt_gauges(session),
    }


def _ledger_gauges(session: Session) -> Gauges:
    """Credits held in user wallets (in circulation) and each system account's balance.

    Both are kept on write (a wallet's balance by a trigger, a system account's as running
    totals in per-backend slots: migration 0012) and read in one statement, so one snapshot:
    under READ COMMITTED two statements could straddle a posting and show an imbalance that
    never existed (the parity alert compares the sides). The two sides add up to zero.
    """
    balances = ledger.system_balances(session)
    wallets = balances.pop("wallets")
    return {
        "spartan_ledger_wallet_credits": (
            "Credits held in user wallets (credits in circulation)",
            [],
            [(wallets,)],
        ),
        "spartan_ledger_system_account_credits": (
            "Balance of each system account of the ledger (sum of its entries)",
            ["account"],
            [(code, total) for code, total in sorted(balances.items())],
        ),
    }


def _payment_lag_gauges(session: Session) -> Gauges:
    """How long MercadoPago's word takes to become credits, and whether its payment events
    are stuck or late.

    Lag: for each purchase credited in the last hour, seconds from the first payment event of
    its payment to the credit (p50, p95 and max; no samples when nothing was credited by a
    webhook). Purchases settled by reconciliation without an event have no lag.
    Backlog: payment events not processed yet, and the age of the oldest (0 when none).
    Lateness: how long before we received them MercadoPago signed the events of the last
    hour (a retry keeps its first `ts`; max 0 when none).
    """
    since = utcnow() - LAG_WINDOW
    recent = select(Purchase.payment_id).where(Purchase.approved_at >= since)
    first_seen = (
        select(
            PaymentEvent.payment_id,
            func.min(PaymentEvent.received_at).label("received_at"),
        )
        .where(PaymentEvent.payment_id.in_(recent))
        .group_by(PaymentEvent.payment_id)
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
        .join(first_seen, first_seen.c.payment_id == Purchase.payment_id)
        .where(Purchase.approved_at >= since, first_seen.c.received_at <= Purchase.approved_at)
    ).one()
    count, p50, p95, worst = stats
    backlog, oldest = session.execute(
        select(func.count(), func.min(PaymentEvent.received_at)).where(
            PaymentEvent.processed_at.is_(None)
        )
    ).one()
    latest = func.extract("epoch", PaymentEvent.received_at - PaymentEvent.signed_at)
    late = session.execute(
        select(func.max(latest)).where(
            PaymentEvent.received_at >= since, PaymentEvent.signed_at.is_not(None)
        )
    ).scalar_one()
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
        "spartan_payment_events_unprocessed": (
            "MercadoPago payment events received and not processed yet",
            [],
            [(backlog,)],
        ),
        "spartan_payment_events_oldest_unprocessed_age_seconds": (
            "Age of the oldest unprocessed MercadoPago payment event (0 when none)",
            [],
            [(max(oldest_age, 0.0),)],
        ),
        "spartan_payment_events_max_lateness_seconds": (
            "Longest time from MercadoPago's signature (ts) to receipt, over the payment events "
            "of the last hour (a retry keeps its first ts; 0 when none)",
            [],
            [(max(float(late or 0.0), 0.0),)],
        ),
    }


def _delivery_gauges(session: Session) -> Gauges:
    """Outgoing webhook deliveries by event type and state (pending, succeeded, failed)."""
    return {
        "spartan_webhook_deliveries": (
            "Outgoing webhook deliveries by event type and state",
            ["event_type", "state"],
            counts(session, "webhook_deliveries"),
        ),
    }


# Outgoing webhook attempts are counted over this recent window (the failure-rate alert).
ATTEMPT_WINDOW = timedelta(minutes=15)


def _attempt_gauges(session: Session) -> Gauges:
    """HTTP attempts of outgoing webhooks in the last 15 minutes, by outcome: `succeeded` (a
    2xx answer) or `failed` (any other answer, a timeout, a refused connection)."""
    ok = and_(
        WebhookDeliveryAttempt.status_code >= 200,
        WebhookDeliveryAttempt.status_code < 300,
        WebhookDeliveryAttempt.error.is_(None),
    )
    succeeded, failed = session.execute(
        select(
            func.count().filter(ok),
            func.count().filter(~ok),
        ).where(WebhookDeliveryAttempt.attempted_at >= utcnow() - ATTEMPT_WINDOW)
    ).one()
    return {
        "spartan_webhook_delivery_attempts_recent": (
            "Outgoing webhook HTTP attempts in the last 15 minutes, by outcome",
            ["outcome"],
            [("succeeded", succeeded), ("failed", failed)],
        ),
    }
