"""Uploaded media: one row per avatar upload, from the staged original to its rendered files."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Sequence,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from market.models.base import Base, Timestamps, new_id

# staged → processed → active → replaced; staged|processed → failed (or replaced when a newer
# avatar won first). States only move forward.
MEDIA_STATES = ("staged", "processed", "active", "replaced", "failed")
LIVE_MEDIA_STATES = ("staged", "processed", "active")

# One counter orders every avatar choice of every user (uploads and presets): "newer wins"
# compares these numbers, never timestamps (two uploads may share a clock tick).
AVATAR_SEQ = Sequence("avatar_seq")


class MediaFile(Timestamps, Base):
    __tablename__ = "media_files"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    # Random and unguessable: it names the staged original and the directory of the outputs.
    token: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="staged", server_default="staged")
    # Creation order (AVATAR_SEQ): an older upload finishing late never replaces a newer one.
    seq: Mapped[int] = mapped_column(
        BigInteger, AVATAR_SEQ, server_default=AVATAR_SEQ.next_value(), unique=True
    )
    original_key: Mapped[str] = mapped_column(String(300))
    original_format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(Integer)
    # Output name ("64.webp") -> storage key, once rendered.
    output_keys: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"state IN {MEDIA_STATES!r}", name="state"),
        Index("ix_media_files_user_created", "user_id", "created_at"),
        Index("ix_media_files_created", "created_at"),
        # The purge looks for rows stuck before activation.
        Index(
            "ix_media_files_pending",
            "created_at",
            postgresql_where="state IN ('staged', 'processed')",
        ),
    )
