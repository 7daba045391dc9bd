"""Idempotency keys of money-moving requests, per user: same key and request, same answer.

Usage, inside the request's one transaction:

    replay = claim(session, user_id=…, key=…, scope="credits.spend", payload=body)
    if replay: answer replay.status, replay.body, replay.headers
    … do the work …
    save(session, user_id=…, key=…, status=201, body=answer)
    session.commit()

`claim` inserts the key row (`INSERT … ON CONFLICT DO NOTHING`) in the same transaction as
the work, so the key and its effect commit or vanish together. A concurrent request with
the same key blocks on that insert until the first commits, then replays its answer (or, if
the first rolled back, does the work itself). Only answers that committed are stored: an
error is not remembered, and a retry after it runs again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.errors import IdempotencyKeyReusedError, ValidationError
from market.models import IdempotencyKey

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Replay:
    """The answer stored for a key, to send again."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def request_hash(scope: str, payload: Any) -> str:
    """A digest of what was asked (scope and canonical JSON of the body)."""
    canonical = json.dumps([scope, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """The key, or ValidationError when it is empty, too long or not printable ASCII."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ValidationError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def claim(
    session: Session, *, user_id: uuid.UUID, key: str, scope: str, payload: Any
) -> Replay | None:
    """None: this request owns the key (do the work, then `save`). A Replay: answer it.

    IdempotencyKeyReusedError (422) when the key was used with another request.
    """
    digest = request_hash(scope, payload)
    owned = session.execute(
        insert(IdempotencyKey)
        .values(
            user_id=user_id,
            key=check_key(key),
            scope=scope,
            request_hash=digest,
            response_body=None,
        )
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.user_id, IdempotencyKey.key])
        .returning(IdempotencyKey.key)
    ).scalar_one_or_none()
    if owned is not None:
        return None
    row = session.execute(
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .execution_options(populate_existing=True)
    ).scalar_one()
    if row.scope != scope or row.request_hash != digest:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was already used with another request"
        )
    return Replay(int(row.response_status or 200), row.response_body, dict(row.response_headers))


def save(
    session: Session,
    *,
    user_id: uuid.UUID,
    key: str,
    status: int,
    body: Any,
    headers: dict[str, str] | None = None,
) -> None:
    """Store the answer of the request that claimed the key (same transaction as its work)."""
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .values(
            response_status=status,
            response_body=json.loads(json.dumps(body, default=str)),
            response_headers=headers or {},
        )
    )
