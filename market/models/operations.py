"""Operations tables: daily analytics roll-ups and the state of alert rules."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, DateTime, Float, ForeignKey, Index, Integer, Numeric, String, Uuid
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
