"""Tasks of the `media` queue: render an uploaded avatar, then make it the profile's avatar."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from market.media import avatars
from workers import runtime
from workers.app import app
from workers.base import TRANSIENT_ERRORS, StepTask

log = logging.getLogger(__name__)


def _clean_up_failed(media_id: uuid.UUID, exc: BaseException) -> None:
    """The job is failing for good: leave no file behind and the profile unchanged."""
    policy = avatars.policy_for(runtime.settings())
    reason = f"{type(exc).__name__}: {getattr(exc, 'detail', None) or exc}"
    with runtime.transaction() as session:
        keys = avatars.fail_media(session, media_id=media_id, reason=reason, policy=policy)
    avatars.delete_files(avatars.storage_for(runtime.settings()), keys)


def _is_final(task: Any, exc: BaseException) -> bool:
    """True unless Celery will retry this error (transient, retries left)."""
    return not isinstance(exc, TRANSIENT_ERRORS) or task.request.retries >= task.max_retries


@app.task(base=StepTask, bind=True, name="media.process_avatar")
def process_avatar(self: Any, *, media_id: str) -> dict[str, Any]:
    """Render every size and format of the upload that is still missing (a rerun does nothing).

    Bad image data fails the job once, without retry, and removes the upload's files.
    """
    s = runtime.settings()
    policy, storage = avatars.policy_for(s), avatars.storage_for(s)
    mid = uuid.UUID(media_id)
    with runtime.transaction() as session:
        pending = avatars.pending_media(session, media_id=mid, policy=policy)
    if pending is None:
        return {"media_id": media_id, "rendered": 0}
    try:
        written = avatars.render_outputs(storage, policy, pending)
        with runtime.transaction() as session:
            still_wanted = avatars.mark_processed(session, pending=pending)
    except Exception as exc:
        if _is_final(self, exc):
            _clean_up_failed(mid, exc)
        raise
    if not still_wanted:
        # Failed or expired while we rendered: what we wrote belongs to nobody.
        _clean_up_failed(mid, RuntimeError("the upload was abandoned while it was rendered"))
    return {"media_id": media_id, "rendered": len(written)}


@app.task(base=StepTask, bind=True, name="media.activate_avatar")
def activate_avatar(self: Any, *, media_id: str) -> dict[str, Any]:
    """Swap the profile's avatar to this upload unless a newer one won; delete replaced files.

    Idempotent: a rerun finds the upload active (or replaced) and only deletes again.
    """
    s = runtime.settings()
    policy, storage = avatars.policy_for(s), avatars.storage_for(s)
    mid = uuid.UUID(media_id)
    try:
        with runtime.transaction() as session:
            swap = avatars.activate(session, media_id=mid, policy=policy)
    except Exception as exc:
        if _is_final(self, exc):
            _clean_up_failed(mid, exc)
        raise
    # After the commit: the rows no longer reference these files.
    avatars.delete_files(storage, swap.delete)
    if swap.user_id is not None and swap.outcome == "activated":
        cache = runtime.cache()
        cache.invalidate("profile", str(swap.user_id))
        cache.invalidate("public_profile", str(swap.user_id))
    return {"media_id": media_id, "avatar": swap.outcome}
