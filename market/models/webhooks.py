"""Outgoing webhooks: endpoints users register, one delivery per (endpoint, notification),
and one attempt row per HTTP try of a delivery."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.models.base import Base, Timestamps, new_id, utcnow

# pending: waiting for its next attempt (`next_attempt_at`); succeeded and failed are final
# until someone asks for a redelivery, which makes the delivery pending again.
DELIVERY_STATES = ("pending", "succeeded", "failed")


class WebhookEndpoint(Timestamps, Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    # The signing key must be readable to sign (Standard Webhooks is HMAC, symmetric); it is
    # shown to the owner only in the answer to the creation and never again.
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(String(300))
    # The disable policy's memory: deliveries that failed for good in a row, and the time of
    # the first failed attempt since the last success (both reset by any success).
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Timestamps, Base):
    """One event for one endpoint; its id is the `webhook-id` of every attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # Kept when the notification itself is purged: the delivery log outlives the inbox.
    notification_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("notifications.id", ondelete="SET NULL")
    )
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact JSON text sent, fixed at fan-out: every retry signs and sends the same bytes.
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    # False for a manual redelivery of a finished delivery: that is one more try, no schedule.
    auto_retry: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set by a redelivery request until a sender claims it: that attempt is logged as manual.
    redelivery_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    attempts: Mapped[list[WebhookDeliveryAttempt]] = relationship(
        order_by="WebhookDeliveryAttempt.id", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        # Fan-out inserts ON CONFLICT DO NOTHING on this: a re-run dispatch adds nothing.
        UniqueConstraint("endpoint_id", "notification_id"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_updated", "updated_at"),
        Index("ix_webhook_deliveries_notification", "notification_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where="state = 'pending'",
        ),
    )


class WebhookDeliveryAttempt(Base):
    """One HTTP try of a delivery, successful or not (the delivery log)."""

    __tablename__ = "webhook_delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    # "initial", "retry" or "manual" (a redelivery someone asked for).
    trigger: Mapped[str] = mapped_column(String(16))
    # Indexed: /metrics counts the attempts of the last minutes at every scrape.
    attempted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
