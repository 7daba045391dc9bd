"""Who is calling: Firebase ID tokens verified with firebase-admin, users upserted from claims."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, literal, null, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.config import Settings
from market.identity import admins
from market.lazy import lazy
from market.models import PrivacySettings, Profile, User
from market.models.base import utcnow

if TYPE_CHECKING:
    import firebase_admin
    from firebase_admin import auth, credentials
else:  # firebase-admin (and google-auth) load with the first token verified.
    firebase_admin, auth, credentials = lazy(
        "firebase_admin", "firebase_admin.auth", "firebase_admin.credentials"
    )

SEEN_REFRESH = timedelta(minutes=5)
# Tokens verified and remembered per process (cleared when full; about 1 KB each).
_MAX_VERIFIED = 4096
# Column widths of `users` (market/models/users.py): longer claims cannot be stored.
MAX_EMAIL = 320
MAX_NAME = 200


class InvalidTokenError(Exception):
    """The bearer token is missing, malformed, expired or not signed by Firebase."""


@dataclass(frozen=True)
class Identity:
    uid: str
    email: str | None
    name: str | None
    is_admin: bool
    # When the token proving these claims expires: admin rights used in the background (webhook
    # fan-out, alerts) last no longer than that (market/identity/admins.py).
    expires_at: datetime | None = None


class FirebaseVerifier:
    """Verifies ID tokens against one Firebase project (its own firebase-admin App)."""

    def __init__(self, settings: Settings, *, name: str = "spartan") -> None:
        # Without a service-account key (tokens are checked against Google's public
        # certificates, or the emulator) the firebase-admin App is made on first use, so the
        # web app factory does not import firebase-admin (market/lazy.py). With a key it is
        # made now: a malformed key stops the process at start, not at the first request.
        self._settings = settings
        self._name = name
        self._lock = threading.Lock()
        self._initialised: Any = None
        self._emulator = settings.emulator_mode
        self._verified: dict[str, Identity] = {}
        if settings.firebase_private_key and settings.firebase_client_email:
            self._initialised = self._make_app()

    @property
    def _app(self) -> Any:
        if self._initialised is None:
            with self._lock:
                if self._initialised is None:
                    self._initialised = self._make_app()
        return self._initialised

    def _make_app(self) -> Any:
        settings, name = self._settings, self._name
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

            credential = _static_credential(AnonymousCredentials())
        try:
            return firebase_admin.get_app(name)
        except ValueError:
            return firebase_admin.initialize_app(credential, options, name=name)

    def verify(self, token: str | None) -> Identity:
        """Return the caller's identity or raise InvalidTokenError.

        A token verified before is answered from this process's memory until it expires: a
        token's claims never change, and a client sends the same one for up to an hour, so
        its signature (and the certificate lookup) is checked once, not on every request.
        """
        if not token:
            raise InvalidTokenError("missing bearer token")
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at is not None and known.expires_at.timestamp() > time.time():
                return known
            self._verified.pop(token, None)  # expired: verified again, so refused
        identity = self._verify(token)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[token] = identity
        return identity

    def _verify(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = auth.verify_id_token(token, app=self._app)
        except (auth.InvalidIdTokenError, ValueError) as exc:
            raise InvalidTokenError(str(exc).split(". ")[0]) from exc
        except auth.CertificateFetchError as exc:
            raise InvalidTokenError("cannot fetch Firebase certificates") from exc
        return identity_from(claims, check_expiry=self._emulator)

    def close(self) -> None:
        if self._initialised is not None:
            firebase_admin.delete_app(self._initialised)
            self._initialised = None


def identity_from(claims: dict[str, Any], *, check_expiry: bool) -> Identity:
    """The identity the verified `claims` state; InvalidTokenError for a malformed claim.

    Signed tokens come with claims Google checked, but emulator tokens are anyone's JSON: every
    claim we use is checked for type and range here, so a strange one is a 401, never a 500.
    """
    exp = claims.get("exp")
    # bool is an int to Python, "nan" and "inf" are floats: none is a time.
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise InvalidTokenError("the exp claim must be a number of seconds")
    if check_expiry and exp < time.time():
        # The emulator path skips the expiry check; keep development honest.
        raise InvalidTokenError("token expired")
    try:
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidTokenError("the exp claim is out of range") from exc
    uid = claims.get("uid")
    if not isinstance(uid, str) or not uid or not uid.isprintable():
        raise InvalidTokenError("the sub claim must be printable text")
    email = _optional_text(claims, "email")
    if email is not None and len(email) > MAX_EMAIL:
        raise InvalidTokenError(f"the email claim is longer than {MAX_EMAIL} characters")
    name = _optional_text(claims, "name")
    return Identity(
        uid=uid,
        email=email,
        # A display name is the user's to choose: a long one is cut, not refused.
        name=name[:MAX_NAME] if name is not None else None,
        is_admin=claims.get("admin") is True,
        expires_at=expires_at,
    )


def _optional_text(claims: dict[str, Any], key: str) -> str | None:
    value = claims.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidTokenError(f"the {key} claim must be text")
    return value


def _static_credential(google_credential: Any) -> credentials.Base:
    """A firebase-admin credential wrapping a google-auth one that needs no network."""

    class StaticCredential(credentials.Base):
        def get_credential(self) -> Any:
            return google_credential

    return StaticCredential()


def upsert_user(session: Session, identity: Identity) -> User:
    """The user row for `identity`, created on first sight (idempotent under races).

    A known user whose claims have not changed costs one SELECT; `last_seen_at` is
    refreshed at most every few minutes so reads do not turn into writes.
    """
    now = utcnow()
    user = session.execute(
        select(User).where(User.firebase_uid == identity.uid)
    ).scalar_one_or_none()
    proof = admins.proof_until(identity, now)
    if (
        user is not None
        and (user.email, user.name, user.is_admin)
        == (identity.email, identity.name, identity.is_admin and user.admin_revoked_at is None)
        and not admins.extends_proof(user, proof, now)
        and user.last_seen_at is not None
        and now - user.last_seen_at < SEEN_REFRESH
    ):
        return user
    values = {"email": identity.email, "name": identity.name, "last_seen_at": now}
    # An operator's revocation outweighs the claim; a proof only ever moves forward (an older
    # token used after a newer one does not shorten it). GREATEST skips NULL.
    not_revoked = User.admin_revoked_at.is_(None)
    claim = literal(identity.is_admin)
    stmt = (
        insert(User)
        .values(firebase_uid=identity.uid, is_admin=identity.is_admin, admin_until=proof, **values)
        .on_conflict_do_update(
            index_elements=[User.firebase_uid],
            set_={
                **values,
                "is_admin": and_(not_revoked, claim),
                "admin_until": case(
                    (and_(not_revoked, claim), func.greatest(User.admin_until, proof)),
                    else_=null(),
                ),
            },
        )
        .returning(User.id)
    )
    user_id = session.execute(stmt).scalar_one()
    session.execute(insert(Profile).values(user_id=user_id).on_conflict_do_nothing())
    session.execute(insert(PrivacySettings).values(user_id=user_id).on_conflict_do_nothing())
    return session.execute(
        select(User).where(User.id == user_id).execution_options(populate_existing=True)
    ).scalar_one()
