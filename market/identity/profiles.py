"""Profiles and privacy: the owner's view, the public view filtered by privacy, and the writes.

Views are plain JSON (strings, numbers, booleans): what the cache stores, what the API answers
and what ETags are computed from are one and the same value.

Lock order when several rows are written: the `profiles` row, then `privacy_settings`, then
`media_files` rows (market/media/avatars.py follows it too).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from market import notifications
from market.db import locked
from market.errors import NotFoundError, PreconditionFailedError
from market.media import avatars
from market.media.images import AvatarPolicy
from market.media.storage import Storage
from market.models import DailyUserAnalytics, MediaFile, PrivacySettings, Profile, User

PROFILE_FIELDS = ("display_name", "bio", "location", "website")
# Longest accepted value of each field, in characters (the columns allow at least this).
MAX_LENGTHS = {"display_name": 80, "bio": 1000, "location": 120, "website": 300}
PRIVACY_FIELDS = (
    "profile_public",
    "show_email",
    "show_location",
    "show_purchase_activity",
    "show_avatar",
)

Precondition = Callable[[dict[str, Any]], None]


def _iso(value: datetime | None) -> str | None:
    # Always UTC: an ETag must not depend on the connection's time zone.
    return value.astimezone(UTC).isoformat() if value is not None else None


def _load(session: Session, user_id: uuid.UUID, *, lock: bool = False) -> tuple[User, Profile]:
    stmt = select(User, Profile).join(Profile, Profile.user_id == User.id).where(User.id == user_id)
    if lock:
        stmt = stmt.with_for_update(of=Profile).execution_options(populate_existing=True)
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise NotFoundError("no such user")
    return row[0], row[1]


def _privacy(session: Session, user_id: uuid.UUID, *, lock: bool = False) -> PrivacySettings:
    stmt = select(PrivacySettings).where(PrivacySettings.user_id == user_id)
    stmt = locked(stmt, lock)
    privacy = session.execute(stmt).scalar_one_or_none()
    if privacy is None:
        # Every user gets one on first sight (market/identity/tokens.py); a missing one is a bug.
        raise NotFoundError("no privacy settings for this user")
    return privacy


def _avatar_media(session: Session, profile: Profile) -> MediaFile | None:
    if profile.avatar_media_id is None:
        return None
    return session.get(MediaFile, profile.avatar_media_id)


def _owner_view(
    session: Session, user: User, profile: Profile, storage: Storage, policy: AvatarPolicy
) -> dict[str, Any]:
    avatar = avatars.avatar_view(profile, _avatar_media(session, profile), storage, policy)
    return {
        "user_id": str(user.id),
        "email": user.email,
        "display_name": profile.display_name,
        "bio": profile.bio,
        "location": profile.location,
        "website": profile.website,
        "avatar_urls": avatar["urls"].get(policy.output_formats[0], {}),
        "avatar": avatar,
        "version": profile.version,
        "member_since": _iso(user.created_at),
        "updated_at": _iso(profile.updated_at),
    }


def privacy_view(privacy: PrivacySettings) -> dict[str, Any]:
    return {name: getattr(privacy, name) for name in PRIVACY_FIELDS} | {
        "updated_at": _iso(privacy.updated_at)
    }


def purchase_activity(session: Session, user_id: uuid.UUID) -> dict[str, Any]:
    """Approved purchases so far and the day of the last one (from the daily roll-up)."""
    count, last_day = session.execute(
        select(
            func.coalesce(func.sum(DailyUserAnalytics.purchases), 0),
            func.max(DailyUserAnalytics.day).filter(DailyUserAnalytics.purchases > 0),
        ).where(DailyUserAnalytics.user_id == user_id)
    ).one()
    return {
        "purchases": int(count),
        "last_purchase_on": last_day.isoformat() if last_day else None,
    }


# Reads ---------------------------------------------------------------------------------------


def own_profile(
    session: Session, *, user_id: uuid.UUID, storage: Storage, policy: AvatarPolicy
) -> dict[str, Any]:
    """The owner's profile (every field), as JSON."""
    user, profile = _load(session, user_id)
    return _owner_view(session, user, profile, storage, policy)


def get_privacy(session: Session, *, user_id: uuid.UUID) -> dict[str, Any]:
    return privacy_view(_privacy(session, user_id))


def full_profile(
    session: Session, *, user_id: uuid.UUID, storage: Storage, policy: AvatarPolicy
) -> dict[str, Any]:
    """Everything about a user's profile, privacy included: what the owner and admins see."""
    user, profile = _load(session, user_id)
    privacy = _privacy(session, user_id)
    return {
        **_owner_view(session, user, profile, storage, policy),
        "purchase_activity": purchase_activity(session, user_id),
        "privacy": privacy_view(privacy),
    }


def public_profile(
    session: Session, *, user_id: uuid.UUID, storage: Storage, policy: AvatarPolicy
) -> dict[str, Any] | None:
    """What anyone else sees, filtered by the user's privacy; None for a private profile.

    NotFoundError when the user does not exist (not cached by callers: ids are random).
    """
    user, profile = _load(session, user_id)
    privacy = _privacy(session, user_id)
    if not privacy.profile_public:
        return None
    view: dict[str, Any] = {
        "user_id": str(user.id),
        "display_name": profile.display_name,
        "bio": profile.bio,
        "website": profile.website,
        "member_since": _iso(user.created_at),
    }
    # Hidden fields are absent, not null: a client cannot tell "hidden" from "empty" otherwise.
    if privacy.show_location:
        view["location"] = profile.location
    if privacy.show_email:
        view["email"] = user.email
    if privacy.show_avatar:
        avatar = avatars.avatar_view(profile, _avatar_media(session, profile), storage, policy)
        view["avatar_urls"] = avatar["urls"].get(policy.output_formats[0], {})
        view["avatar"] = avatar
    if privacy.show_purchase_activity:
        view["purchase_activity"] = purchase_activity(session, user_id)
    return view


# Writes (the caller commits, then invalidates the cache) --------------------------------------


def update_profile(
    session: Session,
    *,
    user_id: uuid.UUID,
    changes: Mapping[str, Any],
    precondition: Precondition,
    storage: Storage,
    policy: AvatarPolicy,
) -> dict[str, Any]:
    """Apply `changes` if `precondition(current view)` passes (it raises on a stale ETag).

    The row is locked before the view is compared, so two devices sending the same ETag are
    serialised: the second one sees the first one's version and gets a 412. Records
    "profile.updated" once per new version. Unchanged values change nothing (no new version).
    """
    user, profile = _load(session, user_id, lock=True)
    precondition(_owner_view(session, user, profile, storage, policy))
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    for name, value in changes.items():
        if getattr(profile, name) != value:
            setattr(profile, name, value)
    if session.is_modified(profile):
        try:
            session.flush()
        except StaleDataError as exc:  # the row lock makes this a safety net only
            raise PreconditionFailedError("the profile changed meanwhile") from exc
        notifications.record(
            session,
            user_id=user_id,
            kind="profile.updated",
            title="Your profile was updated",
            dedupe_key=f"profile:{user_id}:v{profile.version}",
            data={"fields": sorted(changes), "version": profile.version},
        )
    return _owner_view(session, user, profile, storage, policy)


def update_privacy(
    session: Session,
    *,
    user_id: uuid.UUID,
    values: Mapping[str, bool],
    precondition: Precondition | None = None,
) -> dict[str, Any]:
    """Replace the privacy settings if `precondition(current view)` passes (it raises on a
    stale ETag; checked under the lock); records "privacy.updated" when anything changed."""
    _load(session, user_id, lock=True)  # lock order: profile first
    privacy = _privacy(session, user_id, lock=True)
    if precondition is not None:
        precondition(privacy_view(privacy))
    changed = sorted(name for name in PRIVACY_FIELDS if getattr(privacy, name) != values[name])
    for name in changed:
        setattr(privacy, name, values[name])
    if changed:
        session.flush()
        notifications.record(
            session,
            user_id=user_id,
            kind="privacy.updated",
            title="Your privacy settings were updated",
            dedupe_key=f"privacy:{user_id}:{uuid.uuid4()}",
            data={"changed": changed},
        )
    return privacy_view(privacy)
