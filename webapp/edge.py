"""What sits between the API and the outside: browsers (CORS), reverse proxies (ProxyFix)
and the offline Swagger UI assets.

CORS covers `/api/…` for the origins of FRONTEND_URL only, with the request headers the API
reads and the response headers a browser script needs to see. MercadoPago's webhook (a
server-to-server call) and `/metrics` (outside `/api`) send no CORS headers at all.

With TRUSTED_PROXIES=N, Werkzeug's ProxyFix takes the client address (and scheme) from the
N-th X-Forwarded-For (X-Forwarded-Proto) value counted from the right: the values the N
proxies we run appended. Anything a client wrote further left is ignored, so a forged
X-Forwarded-For cannot change the rate-limit key or the logged address.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response, abort, request, send_from_directory
from flask_cors import CORS
from swagger_ui_bundle import swagger_ui_path
from werkzeug.middleware.proxy_fix import ProxyFix

from market.config import Settings

MP_WEBHOOK = "/api/v1/advanced/webhooks/mercadopago"
# Every path under /api/ except MercadoPago's webhook (and anything below it).
CORS_RESOURCE = r"^/api/(?!v1/advanced/webhooks/mercadopago(?:/|$))"
_CORS_PATH = re.compile(CORS_RESOURCE)
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key")
EXPOSED_HEADERS = (
    "ETag",
    "Location",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Pagination",
    # The next page of a keyset list (the cursor, in the link and on its own).
    "Link",
    "X-Next-Cursor",
    "X-Request-ID",
)
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# How long a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE_S = 600

# Swagger UI from the pinned swagger-ui-bundle package: /api/docs works offline.
SWAGGER_UI_VERSION = swagger_ui_path.name.rpartition("-")[2]
SWAGGER_UI_URL = f"/api/docs/assets/{SWAGGER_UI_VERSION}/"
SWAGGER_UI_FILES = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)
# The version is in the path: a file never changes under its URL.
ASSET_MAX_AGE_S = 365 * 24 * 3600


def init_app(app: Flask) -> None:
    """Install ProxyFix, CORS and the Swagger UI assets (before the rate limiter)."""
    settings: Settings = app.extensions["spartan.settings"]
    trust_proxies(app, settings.trusted_proxies)
    CORS(
        app,
        resources={CORS_RESOURCE: {}},
        origins=list(settings.cors_origins),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        methods=list(ALLOWED_METHODS),
        max_age=PREFLIGHT_MAX_AGE_S,
        supports_credentials=False,  # bearer tokens, never cookies
        # Without an Origin header (curl, servers) no CORS header at all: never the list.
        always_send=False,
    )

    # The answer depends on Origin even with one allowed origin (flask-cors adds Vary only
    # for several): a shared cache must not hand one origin's answer to another.
    @app.after_request
    def _vary_on_origin(response: Response) -> Response:
        if _CORS_PATH.match(request.path):
            response.vary.add("Origin")
        return response

    app.register_blueprint(_swagger_ui_assets())


def trust_proxies(app: Flask, hops: int) -> None:
    """Believe exactly `hops` reverse proxies about the client's address and scheme."""
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0
        )


def _swagger_ui_assets() -> Blueprint:
    assets = Blueprint("swagger_ui_assets", __name__)

    @assets.get(f"{SWAGGER_UI_URL}<name>")
    def swagger_ui_asset(name: str) -> Response:
        if name not in SWAGGER_UI_FILES:
            abort(404)
        response = send_from_directory(str(swagger_ui_path), name, max_age=ASSET_MAX_AGE_S)
        response.headers["Cache-Control"] = f"public, max-age={ASSET_MAX_AGE_S}, immutable"
        return response

    return assets
