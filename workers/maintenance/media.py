"""The purge of media files: staged originals, stuck uploads, orphaned avatar files."""

from __future__ import annotations

import logging
from typing import Any

from market.media import avatars
from workers import runtime
from workers.app import app
from workers.base import StepTask
from workers.maintenance.locks import singleton

log = logging.getLogger(__name__)


@app.task(base=StepTask, name="maintenance.purge_media")
def purge_media(*, max_batches: int = 20) -> dict[str, Any]:
    """Delete staged originals older than a day, uploads stuck that long, and avatar files no
    live upload owns, in bounded batches (safe to rerun)."""

    with singleton("purge_media", ttl_s=30 * 60) as acquired:
        if not acquired:
            return {"skipped": "another media purge is running"}
        s = runtime.settings()
        removed = avatars.purge_media(
            runtime.transaction,
            avatars.storage_for(s),
            avatars.policy_for(s),
            batch_size=s.purge_batch_size,
            max_batches=max_batches,
        )
    if any(removed.values()):
        log.info("purged media: %s", removed)
    return {"purged": removed}
