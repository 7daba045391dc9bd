"""The credits ledger: double-entry, append-only, one transaction per business reference.

Sign convention: an entry's `amount` is added to its account. A sale is +N on the user's
wallet and -N on `system:sales`; a spend -N on the wallet, +N on `system:consumed`; a
reversal (refund, chargeback) -N on the wallet, +N on `system:reversed`; a voided refund
the opposite of its reversal.

Guarantees, from the database (migration 0003): a reference posts at most once (unique,
`INSERT … ON CONFLICT DO NOTHING`); a wallet's balance column follows its entries in the same
statement and a CHECK keeps it >= 0; entries and transactions cannot be updated or deleted;
each transaction sums to zero at commit.

Lock order (whole project): idempotency key → purchase → payment_refunds → wallet. Code
that locks a wallet (`FOR UPDATE`) holds no lock of that list taken after it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market import pagination
from market.errors import InsufficientCreditsError, ValidationError
from market.models import LedgerAccount, LedgerEntry, LedgerTransaction

log = logging.getLogger(__name__)

SALES = "system:sales"
CONSUMED = "system:consumed"
REVERSED = "system:reversed"
SYSTEM_ACCOUNTS = (SALES, CONSUMED, REVERSED)


def system_account_id(code: str) -> uuid.UUID:
    """The id of a system account (deterministic: the migration seeds the same ids)."""
    if code not in SYSTEM_ACCOUNTS:
        raise ValueError(f"unknown system account {code!r}")
    return uuid.uuid5(uuid.NAMESPACE_URL, f"spartan:{code}")


@dataclass(frozen=True)
class Posting:
    """A posted transaction; `created` is False when the reference was already posted."""

    transaction_id: uuid.UUID
    created: bool
    user_delta: int = 0


def wallet(session: Session, user_id: uuid.UUID, *, lock: bool = False) -> LedgerAccount:
    """The user's wallet, created on first use (race-free); locked FOR UPDATE if `lock`."""
    stmt = select(LedgerAccount).where(LedgerAccount.user_id == user_id)
    if lock:
        stmt = stmt.with_for_update()
    stmt = stmt.execution_options(populate_existing=True)
    # Read first: a wallet is created once and read on every posting (one round trip saved).
    found = session.execute(stmt).scalar_one_or_none()
    if found is not None:
        return found
    # Two first uses at once: the second insert waits for the first, then does nothing.
    session.execute(
        insert(LedgerAccount)
        .values(id=uuid.uuid4(), code=f"user:{user_id}", kind="user", user_id=user_id)
        .on_conflict_do_nothing(index_elements=[LedgerAccount.user_id])
    )
    return session.execute(stmt).scalar_one()


def balance(session: Session, user_id: uuid.UUID) -> int:
    """The user's balance (0 without a wallet)."""
    found = session.execute(
        select(LedgerAccount.balance).where(LedgerAccount.user_id == user_id)
    ).scalar_one_or_none()
    return int(found or 0)


def find(session: Session, reference: str) -> LedgerTransaction | None:
    return session.execute(
        select(LedgerTransaction).where(LedgerTransaction.reference == reference)
    ).scalar_one_or_none()


def post(
    session: Session,
    *,
    reference: str,
    kind: str,
    legs: Sequence[tuple[uuid.UUID, int]],
    user_id: uuid.UUID | None = None,
    wallet_id: uuid.UUID | None = None,
    purchase_id: uuid.UUID | None = None,
    description: str | None = None,
) -> Posting:
    """Post balanced `legs` (account id, amount) once per `reference` (idempotent)."""
    if len(legs) < 2 or any(amount == 0 for _, amount in legs):
        raise ValueError("a transaction needs at least two non-zero legs")
    if sum(amount for _, amount in legs) != 0:
        raise ValueError(f"legs of {reference} do not sum to zero")
    user_delta = sum(amount for account, amount in legs if account == wallet_id)
    posted = session.execute(
        insert(LedgerTransaction)
        .values(
            id=uuid.uuid4(),
            reference=reference,
            kind=kind,
            user_id=user_id,
            purchase_id=purchase_id,
            user_delta=user_delta,
            description=description,
        )
        .on_conflict_do_nothing(index_elements=[LedgerTransaction.reference])
        .returning(LedgerTransaction.id)
    ).scalar_one_or_none()
    if posted is None:
        # A retry or a concurrent twin: the first post stands, nothing is applied again.
        existing = find(session, reference)
        assert existing is not None
        return Posting(existing.id, created=False, user_delta=existing.user_delta)
    session.execute(
        insert(LedgerEntry),
        [{"transaction_id": posted, "account_id": a, "amount": amount} for a, amount in legs],
    )
    return Posting(posted, created=True, user_delta=user_delta)


def credit_sale(
    session: Session,
    *,
    user_id: uuid.UUID,
    credits: int,
    reference: str,
    purchase_id: uuid.UUID | None = None,
    description: str | None = None,
) -> Posting:
    """Give `credits` bought with money to the user, once per `reference`."""
    if credits <= 0:
        raise ValueError("credits must be positive")
    return _credit_wallet(
        session, user_id, credits, reference, "sale", SALES, purchase_id, description
    )


# One round trip (migration 0011): lock, check, post once per reference, return the balance.
# The text never changes, so psycopg prepares it on each connection once it has run
# `prepare_threshold` times (5); later spends send only the parameters (tests/webapp/
# test_round_trips.py checks both). Alone in autocommit (`market.db.autocommit`) it is the
# spend's only round trip: no BEGIN, no COMMIT.
_SPEND = text(
    "SELECT outcome, transaction_id, user_delta, balance "
    "FROM ledger_spend(:user_id, CAST(:amount AS bigint), :reference, :description, :consumed)"
)


def spend(
    session: Session,
    *,
    user_id: uuid.UUID,
    amount: int,
    description: str | None,
    reference: str | None = None,
) -> tuple[Posting, int]:
    """Debit `amount` credits now; InsufficientCreditsError if the balance is short.

    One statement (`ledger_spend`, migration 0011). Concurrent spends of one user serialise
    on the wallet row (FOR UPDATE inside it): each sees the balance the previous one left.
    The CHECK on the wallet is the backstop. A reference already posted answers its first
    posting (created=False) and the current balance.
    """
    if amount <= 0:
        raise ValidationError("amount must be a positive integer")
    row = session.execute(
        _SPEND,
        {
            "user_id": user_id,
            "amount": amount,
            "reference": reference or f"spend:{uuid.uuid4()}",
            "description": description,
            "consumed": system_account_id(CONSUMED),
        },
    ).one()
    if row.outcome == "short":
        raise InsufficientCreditsError(
            f"balance {row.balance} is less than {amount}", balance=row.balance
        )
    created = row.outcome == "posted"
    return Posting(row.transaction_id, created=created, user_delta=row.user_delta), row.balance


def reverse(
    session: Session,
    *,
    user_id: uuid.UUID,
    credits: int,
    reference: str,
    kind: str,
    purchase_id: uuid.UUID | None = None,
    description: str | None = None,
    partial: bool = False,
) -> tuple[Posting | None, int]:
    """Take `credits` back from the wallet once per `reference`; returns (posting, taken).

    Without `partial`, a balance short of `credits` raises InsufficientCreditsError and
    nothing is posted. With it (chargebacks: the money is gone either way) only what the
    wallet holds is taken; the rest is the caller's to record as unrecovered.
    """
    existing = find(session, reference)
    if existing is not None:
        return Posting(existing.id, False, existing.user_delta), -existing.user_delta
    account = wallet(session, user_id, lock=True)
    taken = credits
    if account.balance < credits:
        if not partial:
            raise InsufficientCreditsError(
                f"the user has {account.balance} of the {credits} credits to take back "
                "(already spent)",
                balance=account.balance,
            )
        taken = account.balance
    if taken == 0:
        return None, 0
    posting = post(
        session,
        reference=reference,
        kind=kind,
        legs=[(account.id, -taken), (system_account_id(REVERSED), taken)],
        user_id=user_id,
        wallet_id=account.id,
        purchase_id=purchase_id,
        description=description,
    )
    return posting, taken


def restore(
    session: Session,
    *,
    user_id: uuid.UUID,
    credits: int,
    reference: str,
    purchase_id: uuid.UUID | None = None,
    description: str | None = None,
) -> Posting:
    """Give back credits a reversal took (e.g. the provider refused the refund); idempotent."""
    return _credit_wallet(
        session, user_id, credits, reference, "refund_void", REVERSED, purchase_id, description
    )


def _credit_wallet(
    session: Session,
    user_id: uuid.UUID,
    credits: int,
    reference: str,
    kind: str,
    source: str,
    purchase_id: uuid.UUID | None,
    description: str | None,
) -> Posting:
    """Move `credits` from the system account `source` into the user's wallet, once."""
    account = wallet(session, user_id)
    return post(
        session,
        reference=reference,
        kind=kind,
        legs=[(account.id, credits), (system_account_id(source), -credits)],
        user_id=user_id,
        wallet_id=account.id,
        purchase_id=purchase_id,
        description=description,
    )


def history(
    session: Session,
    *,
    user_id: uuid.UUID,
    offset: int = 0,
    limit: int = 20,
    count_up_to: int | None = None,
) -> tuple[list[LedgerTransaction], int]:
    """The user's transactions, newest first, and how many there are (numbered pages),
    counted no further than `count_up_to` (None: all)."""
    where = LedgerTransaction.user_id == user_id
    total = pagination.count_up_to(session, select(LedgerTransaction.id).where(where), count_up_to)
    rows = session.execute(
        select(LedgerTransaction)
        .where(where)
        .order_by(LedgerTransaction.created_at.desc(), LedgerTransaction.id.desc())
        .offset(offset)
        .limit(limit)
    ).scalars()
    return list(rows), total


def history_page(
    session: Session, *, user_id: uuid.UUID, cursor: str | None = None, limit: int = 20
) -> tuple[list[LedgerTransaction], str | None]:
    """One keyset page of the user's transactions, newest first, and the next page's cursor.

    Index-backed at any depth (ix_ledger_transactions_user_created_id), and uncounted: the
    cost is the page's, never the history's.
    """
    stmt = pagination.newest_first(
        select(LedgerTransaction).where(LedgerTransaction.user_id == user_id),
        LedgerTransaction.created_at,
        LedgerTransaction.id,
        cursor=cursor,
        limit=limit,
    )
    return pagination.split_page(list(session.execute(stmt).scalars()), limit)


# The kept totals and the parity check read the constants above (imported last on purpose).
from market.ledger import totals  # noqa: E402

check_parity = totals.check_parity
fold_totals = totals.fold_totals
system_balances = totals.system_balances
