"""Who is calling: Firebase ID tokens verified with firebase-admin, users upserted from claims."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import firebase_admin
from firebase_admin import auth, credentials
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.config import Settings
from market.models import PrivacySettings, Profile, User
from market.models.base import utcnow

SEEN_REFRESH = timedelta(minutes=5)


class InvalidTokenError(Exception):
    """The bearer token is missing, malformed, expired or not signed by Firebase."""


@dataclass(frozen=True)
class Identity:
    uid: str
    email: str | None
    name: str | None
    is_admin: bool


class FirebaseVerifier:
    """Verifies ID tokens against one Firebase project (its own firebase-admin App)."""

    def __init__(self, settings: Settings, *, name: str = "spartan") -> None:
        options = {"projectId": settings.firebase_project_id, "httpTimeout": 5}
        credential: credentials.Base
        if settings.firebase_private_key and settings.firebase_client_email:
            credential = credentials.Certificate(
                {
                    "type": "service_account",
                    "project_id": settings.firebase_project_id,
                    "private_key_id": settings.firebase_private_key_id or "",
                    "private_key": settings.firebase_private_key,
                    "client_email": settings.firebase_client_email,
                    "token_uri": "https://oauth2.googleapis.com/token",
                }
            )
        else:
            # Verifying ID tokens needs only Google's public certificates, no service account;
            # a credential that never probes the metadata server keeps start-up offline.
            from google.auth.credentials import AnonymousCredentials

            credential = _StaticCredential(AnonymousCredentials())
        try:
            self._app = firebase_admin.get_app(name)
        except ValueError:
            self._app = firebase_admin.initialize_app(credential, options, name=name)
        self._emulator = settings.emulator_mode

    def verify(self, token: str | None) -> Identity:
        """Return the caller's identity or raise InvalidTokenError."""
        if not token:
            raise InvalidTokenError("missing bearer token")
        try:
            claims: dict[str, Any] = auth.verify_id_token(token, app=self._app)
        except (auth.InvalidIdTokenError, ValueError) as exc:
            raise InvalidTokenError(str(exc).split(". ")[0]) from exc
        except auth.CertificateFetchError as exc:
            raise InvalidTokenError("cannot fetch Firebase certificates") from exc
        if self._emulator and float(claims.get("exp", 0)) < time.time():
            # The emulator path skips the expiry check; keep development honest.
            raise InvalidTokenError("token expired")
        return Identity(
            uid=claims["uid"],
            email=claims.get("email"),
            name=claims.get("name"),
            is_admin=claims.get("admin") is True,
        )

    def close(self) -> None:
        firebase_admin.delete_app(self._app)


class _StaticCredential(credentials.Base):
    """A firebase-admin credential wrapping a google-auth one that needs no network."""

    def __init__(self, google_credential: Any) -> None:
        self._g = google_credential

    def get_credential(self) -> Any:
        return self._g


def upsert_user(session: Session, identity: Identity) -> User:
    """The user row for `identity`, created on first sight (idempotent under races).

    A known user whose claims have not changed costs one SELECT; `last_seen_at` is
    refreshed at most every few minutes so reads do not turn into writes.
    """
    now = utcnow()
    user = session.execute(
        select(User).where(User.firebase_uid == identity.uid)
    ).scalar_one_or_none()
    if (
        user is not None
        and (user.email, user.name, user.is_admin)
        == (identity.email, identity.name, identity.is_admin)
        and user.last_seen_at is not None
        and now - user.last_seen_at < SEEN_REFRESH
    ):
        return user
    values = {
        "email": identity.email,
        "name": identity.name,
        "is_admin": identity.is_admin,
        "last_seen_at": now,
    }
    stmt = (
        insert(User)
        .values(firebase_uid=identity.uid, **values)
        .on_conflict_do_update(index_elements=[User.firebase_uid], set_=values)
        .returning(User.id)
    )
    user_id = session.execute(stmt).scalar_one()
    session.execute(insert(Profile).values(user_id=user_id).on_conflict_do_nothing())
    session.execute(insert(PrivacySettings).values(user_id=user_id).on_conflict_do_nothing())
    return session.execute(
        select(User).where(User.id == user_id).execution_options(populate_existing=True)
    ).scalar_one()
