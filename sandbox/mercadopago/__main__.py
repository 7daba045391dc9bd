"""Run the sandbox until interrupted, configured from the environment.

Environment: MERCADOPAGO_ACCESS_TOKEN, MERCADOPAGO_WEBHOOK_SECRET, SANDBOX_WEBHOOK_URL (the
panel's webhook URL, used when a preference has no notification_url), SANDBOX_PUBLIC_URL, PORT.
"""

from __future__ import annotations

import argparse
import os
import time

from werkzeug.serving import make_server

from sandbox.mercadopago.app import create_app
from sandbox.mercadopago.common import EXTENSION


def main(argv: list[str] | None = None) -> None:
    """Serve the sandbox on --host/--port until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.mercadopago", description="Offline stand-in for MercadoPago"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8090")))
    parser.add_argument(
        "--require-https",
        action="store_true",
        help="production mode: refuse a preference whose notification_url is not https",
    )
    args = parser.parse_args(argv)
    app = create_app(
        access_token=os.environ.get("MERCADOPAGO_ACCESS_TOKEN", "TEST-sandbox-token"),
        webhook_secret=os.environ.get("MERCADOPAGO_WEBHOOK_SECRET", "sandbox-webhook-secret"),
        webhook_url=os.environ.get("SANDBOX_WEBHOOK_URL") or None,
        public_url=os.environ.get("SANDBOX_PUBLIC_URL") or f"http://127.0.0.1:{args.port}",
        # A restarted sandbox must not hand out ids a development database already holds.
        id_offset=int(time.time()) % 100_000_000 * 10,
        require_https=args.require_https,
    )
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"MercadoPago sandbox on http://{args.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions[EXTENSION].close()
        server.server_close()


if __name__ == "__main__":
    main()
