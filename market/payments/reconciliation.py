"""Where reconciliation has read MercadoPago's changes up to: a cursor on the payments'
`date_last_updated`, kept in `sync_cursors` so it survives restarts.

Each run reads the window [cursor - overlap, now]: the overlap re-reads changes MercadoPago's
search index showed late (re-reading is harmless: a payment already applied starts nothing).
The first run, with no cursor yet, looks back `FIRST_LOOKBACK`; older pending purchases are
still found by their own search (external_reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.models import SyncCursor
from market.payments.mercadopago.client import SEARCH_PAGE

CURSOR = "mercadopago.payments.date_last_updated"
OVERLAP = timedelta(minutes=5)
FIRST_LOOKBACK = timedelta(days=2)


@dataclass(frozen=True)
class Window:
    """The changes one run reads, and the page size it reads them in."""

    begin: datetime
    end: datetime
    page: int = SEARCH_PAGE


def window(session: Session, *, now: datetime) -> Window:
    """The window of changes this run reads."""
    row = session.get(SyncCursor, CURSOR, populate_existing=True)
    begin = row.position - OVERLAP if row is not None else now - FIRST_LOOKBACK
    return Window(begin, now)


def advance(session: Session, *, to: datetime) -> None:
    """Move the cursor to `to` once every page up to it is read (never backwards)."""
    stmt = insert(SyncCursor).values(name=CURSOR, position=to)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[SyncCursor.name],
            set_={
                "position": func.greatest(SyncCursor.position, stmt.excluded.position),
                "updated_at": func.now(),
            },
        )
    )


def position(session: Session) -> datetime | None:
    """Where the cursor stands (None before the first run)."""
    row = session.get(SyncCursor, CURSOR, populate_existing=True)
    return row.position if row is not None else None
