"""Sending what a web request recorded in the notification outbox, once its transaction commits.

Workflows end with a `notifications.dispatch_pending` step; a change made by a web handler
alone (profile, privacy, a preset avatar) has no job, so the handler asks for the same task
here. Without it those notifications would wait for beat's minute-by-minute safety net.
"""

from __future__ import annotations

import logging

from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session

from market.db import after_commit
from workers.notifications import dispatch_pending

log = logging.getLogger(__name__)


def dispatch_after_commit(session: Session) -> None:
    """Send one `dispatch_pending` when the caller's transaction commits; nothing on rollback.

    One message per transaction however many notifications it recorded, and however often
    this is called before the commit: the task fans out every undispatched row in batches.
    Should the message be lost, beat's `dispatch_pending` sends the rows within a minute.
    """
    after_commit(session, _send, once=True)


def _send() -> None:
    # The change is committed whatever happens here: a broker that is down must not turn the
    # answer into an error, and beat's dispatch sends the notifications once it is back.
    try:
        dispatch_pending.delay()
    except OperationalError as exc:
        log.warning("notifications dispatch not sent (broker unreachable): %s", exc)
