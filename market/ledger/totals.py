"""What the ledger keeps beside its entries, and the check that they agree: the system
accounts' running totals (one slot per backend, migration 0012), their folding, and the
parity of every kept balance with its entries."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from market.ledger import SYSTEM_ACCOUNTS
from market.models import LedgerAccount, LedgerAccountTotal, LedgerEntry, LedgerTransaction

log = logging.getLogger(__name__)


def system_balances(session: Session) -> dict[str, int]:
    """Each system account's balance, from its running totals (a few rows, whatever the
    number of entries: migration 0012), with the wallets' total in the same snapshot under
    the key "wallets" (the two sides add up to zero)."""
    wallets = (
        select(func.coalesce(func.sum(LedgerAccount.balance), 0))
        .where(LedgerAccount.kind == "user")
        .scalar_subquery()
    )
    rows = session.execute(
        select(LedgerAccount.code, func.coalesce(func.sum(LedgerAccountTotal.total), 0), wallets)
        .outerjoin(LedgerAccountTotal, LedgerAccountTotal.account_id == LedgerAccount.id)
        .where(LedgerAccount.kind == "system")
        .group_by(LedgerAccount.code)
    ).all()
    balances = dict.fromkeys(SYSTEM_ACCOUNTS, 0)
    balances.update({code: int(total) for code, total, _ in rows})
    if rows:
        balances["wallets"] = int(rows[0][2])
    else:  # no system account yet: no posting either, but wallets are read all the same
        balances["wallets"] = int(session.execute(select(wallets)).scalar_one())
    return balances


def fold_totals(session: Session) -> int:
    """Fold the running-total slots of backends not posting right now into slot 0 (the sum
    is unchanged, the rows a reader sums stay few); how many slots were folded. Safe to run
    at any time and concurrently (one folder at a time; a slot in use is skipped)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('ledger_account_totals'))"))
    folded = session.execute(
        text(
            """WITH gone AS (
                DELETE FROM ledger_account_totals WHERE (account_id, slot) IN (
                    SELECT account_id, slot FROM ledger_account_totals WHERE slot <> 0
                    FOR UPDATE SKIP LOCKED)
                RETURNING account_id, total),
            folded AS (
                INSERT INTO ledger_account_totals AS t (account_id, slot, total)
                SELECT account_id, 0, sum(total) FROM gone GROUP BY account_id
                ON CONFLICT (account_id, slot) DO UPDATE SET total = t.total + EXCLUDED.total)
            SELECT count(*) FROM gone"""
        )
    ).scalar_one()
    return int(folded)


def check_parity(session: Session, *, sample: int = 20) -> dict[str, Any]:
    """Compare every account's kept balance (a wallet's `balance`, a system account's running
    total) with the sum of its entries; find unbalanced transactions and a non-zero grand
    total. Read-only; returns counts and a sample."""
    sums = (
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount).label("total"))
        .group_by(LedgerEntry.account_id)
        .subquery()
    )
    running = (
        select(func.coalesce(func.sum(LedgerAccountTotal.total), 0))
        .where(LedgerAccountTotal.account_id == LedgerAccount.id)
        .scalar_subquery()
    )
    kept = case((LedgerAccount.kind == "user", LedgerAccount.balance), else_=running)
    drift = session.execute(
        select(LedgerAccount.code, kept, func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.account_id == LedgerAccount.id)
        .where(kept != func.coalesce(sums.c.total, 0))
    ).all()
    negative = session.execute(
        select(func.count())
        .select_from(sums)
        .join(LedgerAccount, LedgerAccount.id == sums.c.account_id)
        .where(LedgerAccount.kind == "user", sums.c.total < 0)
    ).scalar_one()
    unbalanced = session.execute(
        select(LedgerEntry.transaction_id)
        .group_by(LedgerEntry.transaction_id)
        .having(func.sum(LedgerEntry.amount) != 0)
    ).scalars()
    unbalanced_ids = [str(t) for t in unbalanced]
    empty = session.execute(
        select(func.count())
        .select_from(LedgerTransaction)
        .where(
            ~select(LedgerEntry.id)
            .where(LedgerEntry.transaction_id == LedgerTransaction.id)
            .exists()
        )
    ).scalar_one()
    grand_total = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
    ).scalar_one()
    accounts = session.execute(select(func.count()).select_from(LedgerAccount)).scalar_one()
    report = {
        "accounts": int(accounts),
        "drift": len(drift),
        "negative": int(negative),
        "unbalanced_transactions": len(unbalanced_ids),
        "empty_transactions": int(empty),
        "grand_total": int(grand_total),
        "drift_sample": [
            {"account": code, "balance": int(bal), "entries": int(total)}
            for code, bal, total in drift[:sample]
        ],
        "unbalanced_sample": unbalanced_ids[:sample],
    }
    if drift or negative or unbalanced_ids or empty or grand_total:
        log.error("ledger parity check found drift: %s", report)
    return report
