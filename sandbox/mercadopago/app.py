"""The sandbox as a Flask app (its three blueprints and MercadoPago's error shape), and a
helper that serves it from a thread for tests."""

from __future__ import annotations

import threading

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.mercadopago import checkout, control, rest
from sandbox.mercadopago.common import EXTENSION, ApiError
from sandbox.mercadopago.service import Sandbox


def create_app(
    *,
    access_token: str,
    webhook_secret: str,
    webhook_url: str | None = None,
    public_url: str | None = None,
    webhook_retry_delays: tuple[float, ...] = (5, 30, 120, 900),
    webhook_timeout_s: float = 22.0,
    collector_id: int = 123456789,
    id_offset: int = 0,
    require_https: bool = False,
) -> Flask:
    """The sandbox as a Flask app; `public_url` None means "as the browser reached us"."""
    app = Flask(__name__)
    app.extensions[EXTENSION] = Sandbox(
        access_token=access_token,
        webhook_secret=webhook_secret,
        webhook_url=webhook_url,
        public_url=public_url.rstrip("/") if public_url else None,
        retry_delays=tuple(webhook_retry_delays),
        webhook_timeout_s=webhook_timeout_s,
        collector_id=collector_id,
        id_offset=id_offset,
        require_https=require_https,
    )

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> tuple[Response, int]:
        payload = {"message": error.message, "error": error.error, "status": error.status}
        return jsonify(payload | {"cause": []}), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        slug = (error.name or "error").lower().replace(" ", "_")
        return api_error(ApiError(error.code or 500, error.description or slug, slug))

    for blueprint in (rest.blp, checkout.blp, control.blp):
        app.register_blueprint(blueprint)
    return app


def serve_in_thread(
    app: Flask, host: str = "127.0.0.1", port: int = 0
) -> tuple[BaseWSGIServer, str]:
    """Serve `app` from a daemon thread on a free port; `server.shutdown()` stops it."""
    server = make_server(host, port, app, threaded=True)

    def run() -> None:
        try:
            # A short poll makes `shutdown()` return quickly: tests start many servers.
            server.serve_forever(poll_interval=0.05)
        finally:
            server.server_close()
            sandbox = app.extensions.get(EXTENSION)
            if sandbox is not None:
                sandbox.close()

    threading.Thread(target=run, name=f"mp-sandbox-{server.port}", daemon=True).start()
    return server, f"http://{host}:{server.port}"
