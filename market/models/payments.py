"""MercadoPago's side of a purchase: the payments it answered, the refunds we ask it for, the
payment events it notifies us of, and each purchase's timeline of state changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from market.models.base import Base, Timestamps, new_id, utcnow
from market.models.credits import Money

REFUND_STATES = ("requested", "in_process", "succeeded", "failed")


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
    # The status whose effect apply_payment has committed (None: not applied yet), and the
    # date_last_updated of the answer it applied: a sweep settles only what changed since.
    applied_status: Mapped[str | None] = mapped_column(String(32))
    applied_updated: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentRefund(Timestamps, Base):
    """A refund we ask MercadoPago for: one per payment (admin or automatic).

    Its states: market/payments/states.py (requested → in_process → succeeded | failed).
    """

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


class PaymentEvent(Base):
    """MercadoPago's payment events (webhook, IPN, merchant order, chargeback), as received.

    Written only by market/payments/mercadopago/events.py. Redeliveries and replays of one
    notification collapse onto one row (the dedupe key is built from its signed parts).
    """

    __tablename__ = "payment_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    notification_id: Mapped[int | None] = mapped_column(BigInteger)
    # The topic: payment | merchant_order | topic_chargebacks_wh | anything else (recorded).
    type: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    # The id the notification names (a payment, a merchant order or a chargeback).
    data_id: Mapped[str] = mapped_column(String(64))
    # The payment to settle, when the notification names it (payment topic) directly.
    payment_id: Mapped[int | None] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(128))
    # When MercadoPago signed it (the x-signature ts): a retry may be hours older than now.
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
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
        # The payment lag gauge finds each payment's first event; deleted jobs null job_id;
        # the purge walks processed rows oldest first (migration 0011).
        Index("ix_payment_events_payment", "payment_id", "received_at"),
        Index("ix_payment_events_processed", "processed_at"),
        Index("ix_payment_events_job", "job_id"),
        Index(
            "ix_payment_events_received_signed",
            "received_at",
            postgresql_where="signed_at IS NOT NULL",
        ),
        Index(
            "ix_payment_events_unprocessed",
            "received_at",
            postgresql_where="processed_at IS NULL",
        ),
    )


class PurchaseTransition(Base):
    """One change of a purchase's state: its timeline (append-only)."""

    __tablename__ = "purchase_transitions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    purchase_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("purchases.id", ondelete="CASCADE")
    )
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    __table_args__ = (Index("ix_purchase_transitions_purchase", "purchase_id", "id"),)


class SyncCursor(Base):
    """How far a sweep has read a provider's changes (e.g. payments by date_last_updated)."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), onupdate=utcnow
    )
