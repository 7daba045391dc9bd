"""Credits: packages, purchases, the double-entry ledger, MercadoPago's inbox and payments,
refunds, and the idempotency keys of money-moving requests.

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
)
REFUND_STATES = ("requested", "succeeded", "failed")
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
    """One checkout of one package. States only move forward (market/purchases.py)."""

    __tablename__ = "purchases"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id"))
    package_id: Mapped[str] = mapped_column(String(32), ForeignKey("credit_packages.id"))
    credits: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    # Ours, sent to MercadoPago; also the preference's idempotency key (<= 64 chars).
    external_reference: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    status_detail: Mapped[str | None] = mapped_column(String(64))
    preference_id: Mapped[str | None] = mapped_column(String(128))
    init_point: Mapped[str | None] = mapped_column(Text)
    sandbox_init_point: Mapped[str | None] = mapped_column(Text)
    # The payment that was credited: at most one per purchase, and one purchase per payment.
    payment_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    credit_transaction_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Credits a chargeback or provider-side refund could not take back (already spent).
    unrecovered_credits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reversed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN {PURCHASE_STATES!r}", name="status"),
        CheckConstraint("credits > 0 AND amount > 0", name="positive"),
        Index("ix_purchases_user_created", "user_id", "created_at"),
        Index("ix_purchases_pending_expiry", "expires_at", postgresql_where="status = 'pending'"),
    )


class MercadoPagoPayment(Base):
    """The latest payment MercadoPago answered (GET or search): the provider's word."""

    __tablename__ = "mercadopago_payments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    external_reference: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))
    status_detail: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str | None] = mapped_column(String(3))
    date_last_updated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    fetched_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    # The status whose effect apply_payment has committed (None: not applied yet).
    applied_status: Mapped[str | None] = mapped_column(String(32))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentRefund(Timestamps, Base):
    """A refund we ask MercadoPago for: one per payment (admin or automatic)."""

    __tablename__ = "payment_refunds"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    purchase_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("purchases.id"))
    payment_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    # admin | purchase_expired | purchase_cancelled | already_paid | amount_mismatch
    reason: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="requested")
    amount: Mapped[Decimal | None] = mapped_column(Money)
    # Credits taken from the wallet when the refund was asked (admin refunds only).
    credits: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    requested_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"))
    provider_refund_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(f"status IN {REFUND_STATES!r}", name="status"),
        Index("ix_payment_refunds_purchase", "purchase_id"),
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
        Index("ix_ledger_transactions_user_created", "user_id", "created_at"),
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


class MercadoPagoNotification(Base):
    """The webhook inbox. Redeliveries of one notification collapse onto one row."""

    __tablename__ = "mercadopago_notifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # "n:<notification id>" (MercadoPago's id, the same in every redelivery and copy);
    # a later payment.updated of the same payment carries a new id, so it is processed.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    notification_id: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    data_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="SET NULL")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_mercadopago_notifications_unprocessed",
            "received_at",
            postgresql_where="processed_at IS NULL",
        ),
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
