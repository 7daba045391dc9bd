"""Jobs: one row per workflow run, with one row per step."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.models.base import Base, Timestamps, new_id

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
STEP_STATES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled")


class Job(Timestamps, Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="SET NULL")
    )
    state: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    # What the job works on, e.g. "purchase:<id>": lets a step find its job and operators search.
    subject: Mapped[str | None] = mapped_column(String(200))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # What users see of a failure: a stable code and a short safe message; the details
    # (exception text, provider answers) are for logs and admins only.
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job", order_by="JobStep.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        CheckConstraint(f"state IN {JOB_STATES!r}", name="state"),
        Index("ix_jobs_owner_state", "owner_id", "state"),
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_subject", "subject"),
        Index("ix_jobs_created", "created_at"),
        Index("ix_jobs_finished", "finished_at"),
    )


class JobStep(Base):
    __tablename__ = "job_steps"

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    task_name: Mapped[str] = mapped_column(String(128))
    # The step's keyword arguments (ids and scalars): enough to send the step again.
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    # A step that moves money cannot be cancelled once it has started.
    moves_money: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="steps")

    __table_args__ = (CheckConstraint(f"state IN {STEP_STATES!r}", name="state"),)
