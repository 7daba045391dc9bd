"""Operations tables: daily analytics roll-ups, the state of alert rules, the thresholds
operators set at run time and the audit of those changes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from market.models.base import Base, utcnow


class _DailyFigures:
    purchases: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    revenue_ars: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=0, server_default="0")
    credits_bought: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    credits_spent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refunded_ars: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=0, server_default="0")
    avatar_uploads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DailyUserAnalytics(_DailyFigures, Base):
    """One user's figures for one UTC day (rewritten whole by each roll-up of that day)."""

    __tablename__ = "analytics_user_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )

    # A user's series is read by user and day range.
    __table_args__ = (Index("ix_analytics_user_daily_user_day", "user_id", "day"),)


class RowCount(Base):
    """Part of how many rows of `tbl` have the labels (k1, k2): jobs by kind and state,
    webhook deliveries by event type and state. Kept by triggers on those tables, each in its
    backend's own slot (no hot row); the count is the sum of the slots. Slot 0 holds the
    slots folded by `gauges.fold_counts` (migration 0012)."""

    __tablename__ = "row_counts"

    tbl: Mapped[str] = mapped_column(Text, primary_key=True)
    k1: Mapped[str] = mapped_column(Text, primary_key=True)
    k2: Mapped[str] = mapped_column(Text, primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class DailyAnalytics(_DailyFigures, Base):
    """Every user's figures for one UTC day, and how many users were active."""

    __tablename__ = "analytics_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    active_users: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AlertState(Base):
    """An alert rule's last reading; `breach_started_at` is set while it is breached."""

    __tablename__ = "alert_states"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    breach_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Kept across breaches: when the rule last started firing and last came back to normal.
    last_fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_recovered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlertThreshold(Base):
    """A threshold an admin set at run time; a rule without a row uses its environment default."""

    __tablename__ = "alert_thresholds"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AlertThresholdChange(Base):
    """The audit of threshold changes: who changed which rule, when, from what to what.

    Append-only; `changed_by_uid` keeps the Firebase uid so the record outlives the user row.
    """

    __tablename__ = "alert_threshold_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    old_threshold: Mapped[float | None] = mapped_column(Float)
    new_threshold: Mapped[float | None] = mapped_column(Float)  # None: back to the default
    changed_by: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    changed_by_uid: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
