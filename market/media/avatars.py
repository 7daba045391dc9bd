"""The avatar workflow over media rows and storage: stage, render, activate, choose a preset, purge.

Storage keys: `staging/<token>.<ext>` (the original, never served), `avatars/<user>/<token>/
<size>.<ext>` (the rendered outputs), `presets/<id>/<version>/<size>.<ext>`. Tokens are random,
so every upload has new URLs and files can be cached as immutable.

Files are written before the row that references them is committed and deleted only after
the row that stops referencing them is committed: a crash in between leaves an unreferenced
file (which `purge_media` removes), never a row pointing at a missing file.

Lock order: the `profiles` row, then `media_files` rows (as in market/identity/profiles.py).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from market import notifications
from market.config import Settings
from market.db import locked
from market.errors import ConflictError
from market.media import presets
from market.media.images import AvatarPolicy, inspect_upload, render_avatar
from market.media.storage import Storage, content_type_for, new_token
from market.media.storage import storage_for as storage_for  # callers use avatars.storage_for
from market.models import MediaFile, Profile
from market.models.base import utcnow
from market.models.media import AVATAR_SEQ, LIVE_MEDIA_STATES

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
STAGED_MAX_AGE_S = 24 * 3600
# Output files younger than this are left alone by the orphan sweep, whatever their state.
ORPHAN_GRACE_S = 3600


def policy_for(settings: Settings) -> AvatarPolicy:
    return AvatarPolicy(max_bytes=settings.avatar_max_bytes, max_pixels=settings.avatar_max_pixels)


def output_names(policy: AvatarPolicy) -> list[str]:
    """Every rendered file of an avatar: "64.webp", "64.jpg", … (render_avatar's keys)."""
    return [f"{size}.{EXTENSIONS[fmt]}" for size in policy.sizes for fmt in policy.output_formats]


def output_keys(media: MediaFile, policy: AvatarPolicy) -> dict[str, str]:
    return {name: f"avatars/{media.user_id}/{media.token}/{name}" for name in output_names(policy)}


def avatar_view(
    profile: Profile, media: MediaFile | None, storage: Storage, policy: AvatarPolicy
) -> dict[str, Any]:
    """`{"source", "preset", "media_id", "urls": {format: {size: url}}}` of the current avatar."""
    keys: dict[str, str] = {}
    source = None
    if media is not None and media.state == "active":
        keys, source = dict(media.output_keys), "upload"
    elif profile.avatar_preset in presets.PRESETS:
        keys = presets.preset_keys(profile.avatar_preset, output_names(policy))
        source = "preset"
    urls: dict[str, dict[str, str]] = {}
    for fmt in policy.output_formats:
        per_size = {
            str(size): storage.url(keys[f"{size}.{EXTENSIONS[fmt]}"])
            for size in policy.sizes
            if f"{size}.{EXTENSIONS[fmt]}" in keys
        }
        if per_size:
            urls[fmt] = per_size
    return {
        "source": source,
        "preset": profile.avatar_preset if source == "preset" else None,
        "media_id": str(media.id) if source == "upload" and media is not None else None,
        "urls": urls,
    }


def avatar_options(storage: Storage, policy: AvatarPolicy) -> dict[str, Any]:
    """Upload limits, output sizes and the presets (rendered into storage if missing)."""
    names = output_names(policy)
    choices = []
    for preset in presets.PRESETS.values():
        keys = presets.ensure_preset(storage, policy, preset.id, names)
        urls = {
            str(size): storage.url(keys[f"{size}.{EXTENSIONS[policy.output_formats[0]]}"])
            for size in policy.sizes
        }
        choices.append({"id": preset.id, "name": preset.name, "avatar_urls": urls})
    return {
        "formats": sorted(policy.formats),
        "mime_types": sorted(f"image/{fmt}" for fmt in policy.formats),
        "max_bytes": policy.max_bytes,
        "max_pixels": policy.max_pixels,
        "sizes": list(policy.sizes),
        "output_formats": list(policy.output_formats),
        "presets": choices,
    }


# Upload -------------------------------------------------------------------------------------


def stage_upload(
    session: Session, *, storage: Storage, policy: AvatarPolicy, user_id: uuid.UUID, data: bytes
) -> MediaFile:
    """Check the bytes (413/415/422 before any decoding of pixels), store them, add the row.

    Nothing is written when the bytes are refused. The row is flushed, not committed; if the
    caller's transaction fails it should `discard_staged` (else the purge removes the file).
    """
    info = inspect_upload(data, policy)
    token = new_token()
    key = f"staging/{token}.{EXTENSIONS[info.format]}"
    storage.put(key, data, content_type=info.mime)
    media = MediaFile(
        user_id=user_id,
        token=token,
        state="staged",
        original_key=key,
        original_format=info.format,
        width=info.width,
        height=info.height,
        byte_size=len(data),
    )
    session.add(media)
    session.flush()
    return media


def discard_staged(storage: Storage, media: MediaFile) -> None:
    storage.delete(media.original_key)


# Processing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingMedia:
    id: uuid.UUID
    user_id: uuid.UUID
    token: str
    original_key: str
    keys: dict[str, str]


def pending_media(
    session: Session, *, media_id: uuid.UUID, policy: AvatarPolicy
) -> PendingMedia | None:
    """The upload to render, or None when it is gone, already activated, replaced or failed."""
    media = session.get(MediaFile, media_id)
    if media is None or media.state not in ("staged", "processed"):
        return None
    return PendingMedia(
        media.id, media.user_id, media.token, media.original_key, output_keys(media, policy)
    )


def render_outputs(storage: Storage, policy: AvatarPolicy, pending: PendingMedia) -> list[str]:
    """Render and store the outputs that are missing (none missing: nothing is decoded).

    Raises InvalidImageError (and the other upload errors) when the original cannot be used.
    Returns the names written.
    """
    missing = [name for name, key in pending.keys.items() if not storage.exists(key)]
    if not missing:
        return []
    rendered = render_avatar(storage.get(pending.original_key), policy)
    for name in missing:
        key = pending.keys[name]
        storage.put(key, rendered[name], content_type=content_type_for(key))
    return missing


def mark_processed(session: Session, *, pending: PendingMedia) -> bool:
    """staged → processed with its output keys; False if the row moved on meanwhile."""
    done = session.execute(
        update(MediaFile)
        .where(MediaFile.id == pending.id, MediaFile.state.in_(("staged", "processed")))
        .values(state="processed", output_keys=pending.keys, updated_at=utcnow())
    )
    return bool(done.rowcount)


def fail_media(
    session: Session, *, media_id: uuid.UUID, reason: str, policy: AvatarPolicy
) -> list[str]:
    """Mark a not-yet-active upload failed; returns its keys, to delete after commit."""
    media = session.execute(
        select(MediaFile).where(MediaFile.id == media_id).with_for_update()
    ).scalar_one_or_none()
    if media is None or media.state in ("active",):
        return []
    if media.state in ("staged", "processed"):
        media.state, media.error = "failed", reason[:2000]
    return _files_of(media, policy)


def _files_of(media: MediaFile, policy: AvatarPolicy) -> list[str]:
    keys = set(output_keys(media, policy).values()) | set(media.output_keys.values())
    return [media.original_key, *sorted(keys)]


def delete_files(storage: Storage, keys: Iterable[str]) -> None:
    """Delete these keys (idempotent). Call only after the commit that unreferenced them."""
    for key in keys:
        storage.delete(key)


# Activation and presets ---------------------------------------------------------------------


@dataclass
class Swap:
    """What an avatar change did, and the files its caller deletes after commit."""

    outcome: str  # activated | superseded | unchanged | gone
    user_id: uuid.UUID | None = None
    delete: list[str] = field(default_factory=list)


def _lock_profile(session: Session, user_id: uuid.UUID) -> Profile:
    return session.execute(locked(select(Profile).where(Profile.user_id == user_id))).scalar_one()


def _lock_media(session: Session, media_id: uuid.UUID) -> MediaFile | None:
    return session.execute(
        locked(select(MediaFile).where(MediaFile.id == media_id))
    ).scalar_one_or_none()


def _retire_current(session: Session, profile: Profile, policy: AvatarPolicy) -> list[str]:
    """Mark the profile's current upload replaced; its files are deleted after commit."""
    if profile.avatar_media_id is None:
        return []
    previous = _lock_media(session, profile.avatar_media_id)
    if previous is None:
        return []
    previous.state = "replaced"
    return _files_of(previous, policy)


def activate(session: Session, *, media_id: uuid.UUID, policy: AvatarPolicy) -> Swap:
    """Make a processed upload the profile's avatar, unless a newer choice is already there.

    Idempotent: an active upload stays active; a replaced or failed one changes nothing (its
    files are returned again for deletion). Records "avatar.updated" once per upload.
    """
    peek = session.get(MediaFile, media_id)
    if peek is None:
        return Swap("gone")
    user_id = peek.user_id
    profile = _lock_profile(session, user_id)  # lock order: profile, then media rows
    media = _lock_media(session, media_id)
    if media is None:
        return Swap("gone", user_id)
    if media.state == "active":
        return Swap("unchanged", user_id, [media.original_key])
    if media.state in ("replaced", "failed"):
        return Swap("superseded", user_id, _files_of(media, policy))
    if media.state != "processed":
        raise ConflictError(f"upload {media_id} is {media.state}, not processed")
    if profile.avatar_seq is not None and profile.avatar_seq > media.seq:
        # A newer upload (or a preset chosen later) is already the avatar: keep it.
        media.state = "replaced"
        return Swap("superseded", user_id, _files_of(media, policy))
    delete = _retire_current(session, profile, policy)
    profile.avatar_media_id, profile.avatar_preset, profile.avatar_seq = media.id, None, media.seq
    media.state, media.activated_at = "active", utcnow()
    notifications.record(
        session,
        user_id=user_id,
        kind="avatar.updated",
        title="Your new avatar is ready",
        dedupe_key=f"avatar:{media.id}:activated",
        data={"media_id": str(media.id)},
    )
    return Swap("activated", user_id, [*delete, media.original_key])


def choose_preset(
    session: Session, *, user_id: uuid.UUID, preset_id: str, policy: AvatarPolicy
) -> Swap:
    """Make a preset the avatar (a newer choice than every upload started before it)."""
    presets.get_preset(preset_id)
    profile = _lock_profile(session, user_id)
    if profile.avatar_preset == preset_id and profile.avatar_media_id is None:
        return Swap("unchanged", user_id)
    delete = _retire_current(session, profile, policy)
    seq = session.execute(select(AVATAR_SEQ.next_value())).scalar_one()
    profile.avatar_media_id, profile.avatar_preset, profile.avatar_seq = None, preset_id, seq
    notifications.record(
        session,
        user_id=user_id,
        kind="avatar.updated",
        title="Your avatar was changed",
        dedupe_key=f"avatar:preset:{user_id}:{seq}",
        data={"preset": preset_id},
    )
    return Swap("activated", user_id, delete)


# Purge --------------------------------------------------------------------------------------

Transaction = Callable[[], AbstractContextManager[Session]]


def _batches(keys: Iterable[str], size: int, max_batches: int) -> Iterable[list[str]]:
    it = iter(keys)
    for _ in range(max_batches):
        batch = list(itertools.islice(it, size))
        if not batch:
            return
        yield batch


def purge_media(
    transaction: Transaction,
    storage: Storage,
    policy: AvatarPolicy,
    *,
    batch_size: int = 500,
    max_batches: int = 20,
    staged_max_age_s: int = STAGED_MAX_AGE_S,
    grace_s: int = ORPHAN_GRACE_S,
) -> dict[str, int]:
    """Delete staged originals older than a day, fail uploads stuck that long, and delete
    avatar files that no live upload owns. Bounded batches; safe to rerun."""
    counts = {"staged": 0, "expired_uploads": 0, "orphans": 0}
    cutoff = utcnow() - timedelta(seconds=staged_max_age_s)
    for _ in range(max_batches):
        with transaction() as session:
            stuck = list(
                session.execute(
                    select(MediaFile)
                    .where(
                        MediaFile.state.in_(("staged", "processed")), MediaFile.created_at < cutoff
                    )
                    .order_by(MediaFile.created_at)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            doomed: list[str] = []
            for media in stuck:
                media.state, media.error = "failed", "expired before activation"
                doomed += _files_of(media, policy)
        delete_files(storage, doomed)
        counts["expired_uploads"] += len(stuck)
        if len(stuck) < batch_size:
            break
    for batch in _batches(
        storage.iter_older_than("staging/", staged_max_age_s), batch_size, max_batches
    ):
        delete_files(storage, batch)
        counts["staged"] += len(batch)
    for batch in _batches(storage.iter_older_than("avatars/", grace_s), batch_size, max_batches):
        tokens = {key.split("/")[2] for key in batch if key.count("/") >= 3}
        with transaction() as session:
            live = set(
                session.execute(
                    select(MediaFile.token).where(
                        MediaFile.token.in_(tokens), MediaFile.state.in_(LIVE_MEDIA_STATES)
                    )
                ).scalars()
            )
        orphans = [key for key in batch if key.count("/") < 3 or key.split("/")[2] not in live]
        delete_files(storage, orphans)
        counts["orphans"] += len(orphans)
    return counts
