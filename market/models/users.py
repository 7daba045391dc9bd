"""Users (from Firebase), their profiles and privacy settings."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.models.base import Base, Timestamps, new_id


class User(Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    firebase_uid: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    # The `admin` claim of the caller's latest token, for the request it came with. Rights used
    # where no token is at hand (webhook fan-out, alerts) hold only while `admin_until` (the
    # expiry of the token that proved them) is ahead, or while an operator lists the user
    # (`admin_granted_at`); `admin_revoked_at` ends both and outweighs the claim of any token.
    # market/identity/admins.py owns these rules.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    admin_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    admin_granted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    admin_revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    profile: Mapped[Profile] = relationship(back_populates="user", uselist=False)
    privacy: Mapped[PrivacySettings] = relationship(back_populates="user", uselist=False)


class Profile(Timestamps, Base):
    __tablename__ = "profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    display_name: Mapped[str | None] = mapped_column(String(80))
    bio: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(120))
    website: Mapped[str | None] = mapped_column(String(300))
    # Bumped on every change: the ETag clients send back in If-Match.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The avatar: an uploaded media file or a preset (at most one), and the order of that
    # choice (AVATAR_SEQ) so a late, older upload cannot replace a newer choice.
    avatar_media_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("media_files.id", ondelete="SET NULL")
    )
    avatar_preset: Mapped[str | None] = mapped_column(String(32))
    avatar_seq: Mapped[int | None] = mapped_column(BigInteger)

    user: Mapped[User] = relationship(back_populates="profile")

    __mapper_args__ = {"version_id_col": version}


class PrivacySettings(Timestamps, Base):
    __tablename__ = "privacy_settings"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    profile_public: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    show_email: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    show_location: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    show_purchase_activity: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="false"
    )
    show_avatar: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")

    user: Mapped[User] = relationship(back_populates="privacy")
