"""Keyset (cursor) pages, newest first: the cost of a page does not depend on its depth.

A list ordered by (created_at DESC, id DESC) continues after its last row with
`WHERE (created_at, id) < (last.created_at, last.id)`, read from an index on
(owner, created_at, id): the first page and one a million rows deep cost the same, where an
OFFSET walks every row it skips. The cursor given to clients is that last (created_at, id),
opaque (URL-safe base64); a cursor that does not decode is the client's error.

Numbered pages (OFFSET) stay for the first pages only (webapp.schemas.MAX_PAGE); their total
is counted no further than those pages reach (`count_up_to`), so its cost is bounded too.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import Session

from market.errors import ValidationError


def encode_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor stands for; ValidationError when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        when, _, ident = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        created_at = datetime.fromisoformat(when)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValidationError("cursor is not a cursor this API gave out") from exc


def newest_first(
    stmt: Select[Any], created_at: Any, ident: Any, *, cursor: str | None, limit: int
) -> Select[Any]:
    """`stmt` ordered newest first, after `cursor` when given, `limit` + 1 rows (the extra
    row only says whether there is a next page: see `split_page`)."""
    if cursor is not None:
        after = decode_cursor(cursor)
        stmt = stmt.where(tuple_(created_at, ident) < tuple_(*after))
    return stmt.order_by(created_at.desc(), ident.desc()).limit(limit + 1)


def split_page(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The page and the cursor of the next one (None on the last page)."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(page[-1].created_at, page[-1].id)


def count_up_to(session: Session, stmt: Select[Any], most: int | None) -> int:
    """How many rows `stmt` selects, counting no further than `most` (None: all of them).

    A `LIMIT`ed subquery stops the (index-only) scan at `most` rows: the count of a list a
    million rows long costs what the count of `most` rows does.
    """
    if most is not None:
        stmt = stmt.limit(most)
    return int(session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
