"""Rate limits (flask-limiter on Redis), all declared here by request path and method.

Every limit is an application limit checked before the view runs, so it applies whatever
the endpoint then answers (4xx included) and whichever module defines the endpoint:
- `default` (RATE_LIMIT_DEFAULT): every request of a caller, across endpoints;
- `buy`, `spend`, `upload` (RATE_LIMIT_BUY/SPEND/UPLOAD): only their POST, on top of it.
The caller is the verified user, or the client address when anonymous (or the token is bad).
MercadoPago's webhook, health and /metrics are exempt: they are not user traffic.
A breach answers 429 problem+json with Retry-After, X-RateLimit-* and RateLimit-* headers.
If Redis is unreachable the limits fall back to per-process memory (logged), never a 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter
from werkzeug.exceptions import HTTPException

from webapp.auth import identify

PREFIX = "/api/v1/advanced"
# (scope, method, path, setting)
ENDPOINT_LIMITS = (
    ("buy", "POST", f"{PREFIX}/credits/buy", "rate_limit_buy"),
    ("spend", "POST", f"{PREFIX}/credits/spend", "rate_limit_spend"),
    ("upload", "POST", f"{PREFIX}/profile/avatar/upload", "rate_limit_upload"),
)
EXEMPT_PATHS = frozenset({f"{PREFIX}/webhooks/mercadopago", f"{PREFIX}/health", "/metrics"})


def caller_key() -> str:
    """`user:<firebase uid>` for a verified caller, else `ip:<address>`."""
    try:
        identity = identify()
    except HTTPException:  # a bad token: the view answers 401, the address is limited
        identity = None
    if identity is not None:
        return f"user:{identity.uid}"
    return f"ip:{request.remote_addr or 'unknown'}"


def _not_request(method: str, path: str) -> Callable[[], bool]:
    def exempt() -> bool:
        return not (request.method == method and request.path.rstrip("/") == path)

    return exempt


def _exempt_from_default() -> bool:
    return request.path.rstrip("/") in EXEMPT_PATHS


def init_app(app: Flask) -> Limiter:
    """Install the limiter; call after the blueprints are registered (and after observability)."""
    settings = app.extensions["spartan.settings"]
    limits = [
        ApplicationLimit(
            lambda: settings.rate_limit_default,
            scope="default",
            exempt_when=_exempt_from_default,
        )
    ]
    for scope, method, path, setting in ENDPOINT_LIMITS:
        limits.append(
            ApplicationLimit(
                lambda setting=setting: getattr(settings, setting),
                scope=scope,
                exempt_when=_not_request(method, path),
            )
        )
    limiter = Limiter(
        caller_key,
        application_limits=limits,
        storage_uri=settings.redis_url,
        storage_options={"socket_timeout": 1, "socket_connect_timeout": 1},
        key_prefix=f"{settings.key_prefix}:ratelimit",
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    app.extensions["spartan.limiter"] = limiter

    # Registered before flask-limiter's own hook, so it runs after it (Flask runs them reversed).
    @app.after_request
    def _ietf_headers(response: Response) -> Response:
        # The IETF draft's names beside flask-limiter's X-RateLimit-* (same limit, same numbers).
        if "X-RateLimit-Limit" in response.headers:
            reset_in = max(
                0, int(float(response.headers.get("X-RateLimit-Reset", 0)) - time.time())
            )
            response.headers["RateLimit-Limit"] = response.headers["X-RateLimit-Limit"]
            response.headers["RateLimit-Remaining"] = response.headers["X-RateLimit-Remaining"]
            response.headers["RateLimit-Reset"] = str(reset_in)
        return response

    limiter.init_app(app)
    return limiter
