"""Admin rights where no token is at hand, and the operator's hold over them.

A request's admin rights come from its token's `admin` claim (market/identity/tokens.py). Work
done later on a user's behalf (webhook fan-out of every user's events, alerts) has no token:
there, an admin's rights last as long as the token that last proved them would have (at most
a Firebase ID token's hour), or while an operator lists the user (`grant-admin`). An
operator's `revoke-admin` ends both at once and outweighs the claim of any token, until a
later `grant-admin`. Owns the admin columns of `users`.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from market.db import locked
from market.errors import NotFoundError
from market.models import User
from market.models.base import utcnow

if TYPE_CHECKING:
    from market.identity.tokens import Identity

# Firebase ID tokens live one hour: no proof outlasts that, whatever an (emulator) token says.
TOKEN_LIFETIME = timedelta(hours=1)
# A proof is written again only when it moves this much: reads do not turn into writes.
PROOF_STEP = timedelta(minutes=5)


def proof_until(identity: Identity, now: datetime) -> datetime | None:
    """Until when `identity`'s admin claim stands for background work (None: not an admin)."""
    if not identity.is_admin or identity.expires_at is None:
        return None
    return min(identity.expires_at, now + TOKEN_LIFETIME)


def extends_proof(user: User, proof: datetime | None, now: datetime) -> bool:
    """Whether `proof` is worth writing over the one `user` has."""
    if proof is None or user.admin_revoked_at is not None:
        return False
    held = user.admin_until
    return held is None or held < now or proof > held + PROOF_STEP


def in_force() -> ColumnElement[bool]:
    """SQL: the user's admin rights hold now, for work done without their token."""
    return and_(
        User.admin_revoked_at.is_(None),
        or_(
            User.admin_granted_at.is_not(None),
            and_(User.is_admin.is_(True), User.admin_until > func.now()),
        ),
    )


def find_user(session: Session, who: str, *, lock: bool = False) -> User:
    """The user by Firebase uid or by user id; NotFoundError if never seen."""
    condition = User.firebase_uid == who
    with contextlib.suppress(ValueError):  # not a UUID: a Firebase uid only
        condition = or_(condition, User.id == uuid.UUID(who))
    stmt = select(User).where(condition)
    stmt = locked(stmt, lock)
    user = session.execute(stmt).scalar_one_or_none()
    if user is None:
        raise NotFoundError(f"no user {who!r}: a user exists once they have signed in")
    return user


def revoke(session: Session, who: str) -> User:
    """End the user's admin rights now, everywhere, whatever their tokens claim (idempotent)."""
    user = find_user(session, who, lock=True)
    now = utcnow()
    user.is_admin = False
    user.admin_until = None
    user.admin_granted_at = None
    user.admin_revoked_at = user.admin_revoked_at or now
    session.flush()
    return user


def grant(session: Session, who: str) -> User:
    """List the user as an admin for background work, and lift a revocation (idempotent).

    Admin endpoints still need the token's `admin` claim: the list speaks for work done
    without a token (alerts, every user's events), where no claim can be checked.
    """
    user = find_user(session, who, lock=True)
    user.admin_revoked_at = None
    user.admin_granted_at = user.admin_granted_at or utcnow()
    session.flush()
    return user
