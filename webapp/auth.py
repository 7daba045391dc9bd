"""Bearer-token authentication and the admin check, for handlers."""

from __future__ import annotations

import functools
import hmac
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from flask_smorest import abort
from werkzeug.exceptions import HTTPException

from market.identity.tokens import Identity, InvalidTokenError, upsert_user
from market.models import User
from webapp import db
from webapp.errors import ProblemSchema

F = TypeVar("F", bound=Callable[..., Any])

SECURITY = [{"bearerAuth": []}]
# Every protected operation can answer these; documented once here, not on each view.
UNAUTHORIZED = "Missing or invalid bearer token"
FORBIDDEN = "Administrators only"


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def operator_token_ok() -> bool:
    """Whether the request carries `Authorization: Bearer <METRICS_TOKEN>` (when one is set)."""
    expected = current_app.extensions["spartan.settings"].metrics_token
    token = _bearer()
    return bool(expected and token and hmac.compare_digest(token.encode(), expected.encode()))


def identify() -> Identity | None:
    """The verified caller, or None when no credentials were sent; 401 when they are bad."""
    if "identity" in g:
        return g.identity
    token = _bearer()
    if token is None:
        if request.headers.get("Authorization"):
            _unauthorized("the Authorization header must be `Bearer <Firebase ID token>`")
        g.identity = None
        return None
    try:
        g.identity = current_app.extensions["spartan.verifier"].verify(token)
    except InvalidTokenError as exc:
        _unauthorized(f"invalid token: {exc}")
    return g.identity


def current_user(required: bool = True) -> User | None:
    """The caller's user row (created on first sight); 401 if `required` and anonymous."""
    if "user" in g:
        return g.user
    identity = identify()
    if identity is None:
        if required:
            _unauthorized("authentication required")
        return None
    session = db.session()
    g.user = upsert_user(session, identity)
    session.commit()
    g.user_id = g.user.id
    _known_ids()[identity.uid] = g.user.id
    return g.user


# Firebase uid -> user id, per app process. A user's id never changes and user rows are never
# deleted, so a read that needs only the id (a cached balance) skips PostgreSQL entirely; the
# row's claims and last_seen_at are still synced by the caller's other requests.
_MAX_KNOWN_IDS = 100_000


def _known_ids() -> dict[str, uuid.UUID]:
    known = current_app.extensions.setdefault("spartan.user_ids", {})
    if len(known) >= _MAX_KNOWN_IDS:
        known.clear()
    return known


def current_user_id() -> uuid.UUID:
    """The caller's user id, without a database round trip once this process has seen them."""
    if "user_id" in g:
        return g.user_id
    identity = identify()
    known = _known_ids().get(identity.uid) if identity is not None else None
    if known is None:
        return current_user().id  # type: ignore[union-attr]  (401 when anonymous)
    g.user_id = known
    return known


def known_user_id() -> uuid.UUID | None:
    """The caller's user id if the token is good and this process knows them, else None.

    Never a round trip and never a 401 (for work done before the view: the view answers)."""
    try:
        identity = identify()
    except HTTPException:
        return None
    return _known_ids().get(identity.uid) if identity is not None else None


def _unauthorized(detail: str) -> None:
    abort(401, message=detail, headers={"WWW-Authenticate": 'Bearer realm="spartan"'})


def login_required(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The token is checked here; the user row is read when the handler asks for it.
        if identify() is None:
            _unauthorized("authentication required")
        return fn(*args, **kwargs)

    _document(wrapper, fn, {"401": UNAUTHORIZED})
    return wrapper  # type: ignore[return-value]


def admin_required(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if not user.is_admin:
            abort(403, message="administrators only")
        return fn(*args, **kwargs)

    _document(wrapper, fn, {"401": UNAUTHORIZED, "403": FORBIDDEN})
    return wrapper  # type: ignore[return-value]


def login_optional(fn: F) -> F:
    """Anonymous callers are served too; a token, when sent, must be valid (401 otherwise)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        identify()
        return fn(*args, **kwargs)

    _document(wrapper, fn, {"401": "An invalid bearer token"}, security=[{}, *SECURITY])
    return wrapper  # type: ignore[return-value]


def _document(
    wrapper: Any, fn: Any, responses: dict[str, str], security: list[Any] = SECURITY
) -> None:
    """Mark the operation as needing a bearer token and document the answers without one."""
    wrapper._apidoc = getattr(fn, "_apidoc", {})
    manual = wrapper._apidoc.setdefault("manual_doc", {})
    manual.setdefault("security", security)
    documented = manual.setdefault("responses", {})
    for status, description in responses.items():
        documented.setdefault(
            status,
            {
                "description": description,
                "content": {"application/json": {"schema": ProblemSchema}},
            },
        )
