"""The baselines served by gunicorn exactly as the project is, and the project without its cache.

gunicorn 'bench.baseline_apps:baseline_app()'   # HMAC-checking webhook + bare JSON read
gunicorn 'bench.baseline_apps:uncached_app()'   # the real app, every read from PostgreSQL
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, jsonify, request

from market.cache import Cache, _as_json
from market.payments.mercadopago.signature import InvalidSignatureError, verify_notification

T = TypeVar("T")
WEBHOOK_PATH = "/api/v1/advanced/webhooks/mercadopago"
JSON_PATH = "/bare/json"


def baseline_app() -> Flask:
    """The least a server can do: check the same x-signature HMAC, or answer a small JSON."""
    app = Flask(__name__)
    secret = os.environ["MERCADOPAGO_WEBHOOK_SECRET"]

    @app.post(WEBHOOK_PATH)
    def webhook() -> Any:
        body = request.get_json(silent=True, force=True)
        data_id = request.args.get("data.id")
        if data_id is None and isinstance(body, dict):
            data_id = str((body.get("data") or {}).get("id") or "") or None
        try:
            verify_notification(
                x_signature=request.headers.get("x-signature"),
                x_request_id=request.headers.get("x-request-id"),
                data_id=data_id,
                secret=secret,
            )
        except InvalidSignatureError as exc:
            return jsonify({"detail": exc.reason}), 401
        return jsonify({"status": "accepted"})

    @app.get(JSON_PATH)
    def bare_json() -> Any:
        return jsonify({"balance": 0, "recent": []})

    return app


class PassThroughCache(Cache):
    """Every read goes to the loader (PostgreSQL), as when Redis is unreachable."""

    def get_or_load(self, namespace: str, ident: str, loader: Callable[[], T]) -> T:
        return _as_json(loader())


def uncached_app() -> Flask:
    """The project's app with its cache replaced by a pass-through: reads are never cached."""
    from webapp import create_app

    app = create_app()
    app.extensions["spartan.cache"] = PassThroughCache(
        app.extensions["spartan.redis"], app.extensions["spartan.settings"].key_prefix
    )
    return app
