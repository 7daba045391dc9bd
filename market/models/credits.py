"""Credits: packages, purchases, the double-entry ledger and the idempotency keys of
money-moving requests (MercadoPago's payments, refunds and payment events: payments.py).

The database enforces what money depends on (migration 0003): unique business references,
user wallets never below zero (a CHECK on a balance kept by a trigger on every entry),
entries and transactions append-only (triggers refuse UPDATE/DELETE), and every ledger
transaction summing to zero (a deferred constraint trigger, checked at commit).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from market.models.base import Base, Timestamps, new_id, utcnow

Money = Numeric(12, 2)

PURCHASE_STATES = (
    "pending",
    "approved",
    "rejected",
    "cancelled",
    "expired",
    "refunded",
    "charged_back",
    "partially_refunded",
)
ACCOUNT_KINDS = ("user", "system")
TRANSACTION_KINDS = ("sale", "spend", "refund", "chargeback", "refund_void")


class CreditPackage(Base):
    """What can be bought; seeded by the migration."""

    __tablename__ = "credit_packages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    credits: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3), default="ARS", server_default="ARS")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        CheckConstraint("credits > 0", name="credits_positive"),
        CheckConstraint("price > 0", name="price_positive"),
    )


class Purchase(Timestamps, Base):
    """One checkout of one package. Its states: market/payments/states.py."""

    __tablename__ = "purchases"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id"))
    package_id: Mapped[str] = mapped_column(String(32), ForeignKey("credit_packages.id"))
    credits: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    # Ours, sent to MercadoPago; also the preference's idempotency key (<= 64 chars).
    external_reference: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(32), default="pending", server_default="pending")
    status_detail: Mapped[str | None] = mapped_column(String(64))
    preference_id: Mapped[str | None] = mapped_column(String(128))
    init_point: Mapped[str | None] = mapped_column(Text)
    sandbox_init_point: Mapped[str | None] = mapped_column(Text)
    # The payment that was credited: at most one per purchase, and one purchase per payment.
    payment_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    credit_transaction_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Credits taken back by partial refunds made at MercadoPago (all of them once refunded).
    refunded_credits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Credits a chargeback or provider-side refund could not take back (already spent).
    unrecovered_credits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reversed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN {PURCHASE_STATES!r}", name="status"),
        CheckConstraint("credits > 0 AND amount > 0", name="positive"),
        Index("ix_purchases_user_created_id", "user_id", "created_at", "id"),
        Index("ix_purchases_approved_at", "approved_at"),
        Index("ix_purchases_reversed_at", "reversed_at"),
        Index("ix_purchases_status_settled", "status", "settled_at"),
        Index("ix_purchases_pending_expiry", "expires_at", postgresql_where="status = 'pending'"),
    )


class LedgerAccount(Base):
    """A user's wallet or a system account. `balance` is kept by a trigger (user wallets)."""

    __tablename__ = "ledger_accounts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"), unique=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint(f"kind IN {ACCOUNT_KINDS!r}", name="kind"),
        CheckConstraint("(kind = 'user') = (user_id IS NOT NULL)", name="user_wallet"),
        # The rule of the product: a wallet never goes below zero, whatever the code does.
        CheckConstraint("kind <> 'user' OR balance >= 0", name="balance_non_negative"),
    )


class LedgerAccountTotal(Base):
    """Part of a system account's balance: the trigger on ledger_entries adds each posting to
    its backend's own slot (no hot row); the balance is the sum of the slots. Slot 0 holds
    the slots folded by `ledger.fold_totals` (migration 0012)."""

    __tablename__ = "ledger_account_totals"

    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger)


class LedgerTransaction(Base):
    """A set of entries summing to zero, posted once per business `reference`."""

    __tablename__ = "ledger_transactions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    purchase_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("purchases.id"))
    # The change of the user's wallet (signed), for history pages.
    user_delta: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint(f"kind IN {TRANSACTION_KINDS!r}", name="kind"),
        Index("ix_ledger_transactions_user_created_id", "user_id", "created_at", "id"),
        Index("ix_ledger_transactions_created", "created_at"),
        Index("ix_ledger_transactions_purchase", "purchase_id"),
    )


class LedgerEntry(Base):
    """One leg of a transaction: `amount` credits added to (or taken from) an account."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("ledger_transactions.id"), index=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_non_zero"),
        Index("ix_ledger_entries_account", "account_id", "id"),
    )


class IdempotencyKey(Base):
    """The answer given to (user, Idempotency-Key), committed with the work it answered."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any] = mapped_column(JSONB)
    response_headers: Mapped[dict[str, str]] = mapped_column(
        JSONB, default=dict, server_default="{}"
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), index=True
    )
