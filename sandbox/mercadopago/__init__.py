"""Offline stand-in for MercadoPago: REST API, Checkout Pro page, signed and retried
notifications (webhooks and legacy IPN), refunds, chargebacks, and a control API that selects
each of MercadoPago's behaviours for tests (see `control.py`).

    python -m sandbox.mercadopago [--host 127.0.0.1] [--port 8090] [--require-https]

Modules: `state` (preferences, payments, merchant orders), `refunds`, `chargebacks`,
`search`, `webhooks` (notification forms, signing, retries, delivery log), `chaos`,
`settings`, `service` (the `Sandbox` object tying them), and the blueprints `rest`,
`checkout` and `control`, put together by `app.create_app`.
"""

from sandbox.mercadopago.app import create_app, serve_in_thread
from sandbox.mercadopago.common import EXTENSION, ApiError, sign
from sandbox.mercadopago.service import Sandbox

__all__ = ["EXTENSION", "ApiError", "Sandbox", "create_app", "serve_in_thread", "sign"]
