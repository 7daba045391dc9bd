"""Every error as RFC 9457 problem+json: domain errors, flask-smorest's own, and crashes."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError

from market.errors import MarketError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://spartan.market/problems/"
# Retry-After of a 503 while the database is unreachable: about a restart or a failover, so a
# client (MercadoPago included: any answer but 200/201 makes it retry) comes back soon.
DATABASE_RETRY_AFTER_S = 5
# Retry-After of any other 503 (a dependency or the payment provider is unavailable).
UNAVAILABLE_RETRY_AFTER_S = 5
# RFC 9110 15.5.2: every 401 carries a challenge. The API's scheme is a Firebase ID token.
BEARER_CHALLENGE = 'Bearer realm="spartan"'
# Headers a status cannot go without (RFC 9110, RFC 6585), with the value used when the code
# that raised the error set none: 401 a challenge, 429 and 503 when to come back.
REQUIRED_HEADERS: dict[int, tuple[str, str]] = {
    401: ("WWW-Authenticate", BEARER_CHALLENGE),
    429: ("Retry-After", "60"),
    503: ("Retry-After", str(UNAVAILABLE_RETRY_AFTER_S)),
}


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details (documented shape of every error)."""

    class Meta:
        # Extension members (e.g. `balance` of a 409 on spend) are part of the format.
        unknown = ma.INCLUDE

    type = ma.fields.String()
    title = ma.fields.String()
    status = ma.fields.Integer()
    detail = ma.fields.String()
    instance = ma.fields.String()
    errors = ma.fields.Dict(metadata={"description": "Per-field validation errors"})


def problem(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "instance": request.path,
    }
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    required = REQUIRED_HEADERS.get(status)
    if required is not None and required[0] not in response.headers:
        response.headers[required[0]] = required[1]
    return response


def _own_headers(error: HTTPException) -> dict[str, str]:
    """The headers werkzeug gives the error (405's Allow, 416's Content-Range…), not its
    HTML Content-Type, plus those flask-smorest's `abort(headers=…)` put in its data."""
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    data = getattr(error, "data", None) or {}
    headers.update(data.get("headers") or {})
    return headers


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-").replace("'", "")


def handle_http_exception(error: HTTPException) -> Response:
    """flask-smorest's and werkzeug's HTTP errors (404, 405, 422 from webargs, 500…)."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    headers = _own_headers(error)
    if status >= 500:
        # Never leak internals: the generic text only.
        return problem(status, slug=_slug(error.name), title=error.name, headers=headers)
    errors = data.get("errors") or data.get("messages")
    detail = data.get("message") or error.description
    if errors and status == 422:
        detail = "The request did not validate; see `errors`."
    return problem(
        status,
        slug=_slug(error.name),
        title=error.name,
        detail=detail,
        headers=headers or None,
        errors=errors,
    )


def handle_market_error(error: MarketError) -> Response:
    return problem(
        error.status,
        slug=error.slug,
        title=error.title,
        detail=error.detail,
        headers=error.headers,
        **error.extra,
    )


def handle_crash(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return handle_http_exception(InternalServerError())


def database_unreachable(error: sa_exc.SQLAlchemyError) -> bool:
    """Whether the error says the database cannot be reached or served us (dropped or refused
    connection, pool exhausted, query cancelled), not that our SQL or data was wrong."""
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection in time
        return True
    return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated
    )


def handle_database_error(error: sa_exc.SQLAlchemyError) -> Response:
    """503 with Retry-After while the database is unreachable (the request's transaction was
    rolled back, and writes are idempotent, so a retry is safe); any other is a crash."""
    if not database_unreachable(error):
        return handle_crash(error)
    cause = getattr(error, "orig", None) or error
    log.warning("database unreachable on %s %s: %s", request.method, request.path, cause)
    return problem(
        503,
        slug="service-unavailable",
        title="Service Unavailable",
        detail="The database is unreachable; try again shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def handle_recursion(error: RecursionError) -> Response:
    """400 for a JSON body nested deeper than the parser can recurse (`[[[[…]]]]`, a few KB):
    bad input, not a crash. The JSON parsers (webargs, Flask) catch only ValueError."""
    try:
        json.loads(request.get_data(cache=True))
    except RecursionError:
        return problem(
            400,
            slug="bad-request",
            title="Bad Request",
            detail="The JSON body is nested too deeply.",
        )
    except ValueError:
        pass
    return handle_crash(error)


def register(app: Flask) -> None:
    app.register_error_handler(RecursionError, handle_recursion)
    app.register_error_handler(MarketError, handle_market_error)
    app.register_error_handler(sa_exc.SQLAlchemyError, handle_database_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_crash)
