"""The control API for scripts and tests: JSON, no auth, never affected by chaos.

`"webhook"` is `send` (default), `withhold` (change silently) or `duplicate` (`copies`
identical deliveries at once).

    POST /_sandbox/preferences/<pref_id>/pay  {"status", "status_detail"?, "payment_type_id"?,
                                               "webhook"?, "copies"?}
    POST /_sandbox/payments/<id>/status       {"status", "status_detail"?, "webhook"?}
    POST /_sandbox/payments/<id>/refund       {"amount"?, "refund_status"?, "webhook"?}
    POST /_sandbox/payments/<id>/chargeback   {"status_detail"?, "payment_update"?, "webhook"?}
    POST /_sandbox/refunds/<id>/status        {"status": "approved" | "rejected", "webhook"?}
    POST /_sandbox/payments/<id>/notify       {"request_id"?, "ts"?}  (one attempt, now)
    GET  /_sandbox/webhooks[?payment_id=&form=webhook|ipn&topic=]  one entry per attempt
    GET  /_sandbox/calls                      API calls answered per "METHOD /route" so far
    GET  /_sandbox/settings, POST /_sandbox/settings {"notify"?, "require_https"?,
                                               "refund_status"?, "clock_offset_s"?}
    POST /_sandbox/chaos  {"error_rate", "timeout_rate", "delay_ms", "error_status", "hang_s",
                           "seed"}                  (REST endpoints only; {} turns it off)
    POST /_sandbox/reset                      forget everything, settings back to defaults
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox.mercadopago.common import EXTENSION, ApiError
from sandbox.mercadopago.rest import body
from sandbox.mercadopago.service import Sandbox, webhook_args

blp = Blueprint("control", __name__, url_prefix="/_sandbox")


def sandbox() -> Sandbox:
    return current_app.extensions[EXTENSION]


@blp.post("/preferences/<pref_id>/pay")
def pay(pref_id: str) -> tuple[Response, int]:
    data = body()
    mode, copies = webhook_args(data)
    payment = sandbox().pay(
        pref_id,
        str(data.get("status", "approved")),
        data.get("status_detail"),
        str(data.get("payment_type_id", "credit_card")),
        mode,
        copies,
    )
    return jsonify(payment), 201


@blp.post("/payments/<int:payment_id>/status")
def set_status(payment_id: int) -> Response:
    data = body()
    mode, copies = webhook_args(data)
    status, detail = str(data.get("status")), data.get("status_detail")
    return jsonify(sandbox().set_status(payment_id, status, detail, mode, copies))


@blp.post("/payments/<int:payment_id>/refund")
def refund(payment_id: int) -> Response:
    """A refund "from MercadoPago's panel"; answers the payment."""
    data = body()
    mode, copies = webhook_args(data)
    status = str(data.get("refund_status", "approved"))
    return jsonify(sandbox().panel_refund(payment_id, data.get("amount"), status, mode, copies))


@blp.post("/payments/<int:payment_id>/chargeback")
def chargeback(payment_id: int) -> Response:
    """Open the payment's chargeback or move it; answers the payment."""
    data = body()
    mode, copies = webhook_args(data)
    detail = str(data.get("status_detail", "settled"))
    payment_update = data.get("payment_update", True)
    if not isinstance(payment_update, bool):
        raise ApiError(400, "payment_update must be true or false")
    sandbox().charge_back(payment_id, detail, mode, copies, payment_update)
    return jsonify(sandbox().payment(payment_id))


@blp.post("/refunds/<int:refund_id>/status")
def refund_status(refund_id: int) -> Response:
    data = body()
    mode, copies = webhook_args(data)
    return jsonify(sandbox().settle_refund(refund_id, str(data.get("status")), mode, copies))


@blp.post("/payments/<int:payment_id>/notify")
def notify(payment_id: int) -> Response:
    data = body()
    ts = data.get("ts")
    entry = sandbox().resend(payment_id, data.get("request_id"), None if ts is None else str(ts))
    return jsonify(entry)


@blp.get("/webhooks")
def webhooks() -> Response:
    return jsonify(sandbox().delivery_log(request.args.to_dict()))


@blp.get("/calls")
def calls() -> Response:
    return jsonify(sandbox().call_counts())


@blp.get("/settings")
def get_settings() -> Response:
    return jsonify(sandbox().settings)


@blp.post("/settings")
def set_settings() -> Response:
    return jsonify(sandbox().configure(body()))


@blp.post("/chaos")
def chaos() -> Response:
    return jsonify(sandbox().chaos.configure(body()))


@blp.post("/reset")
def reset() -> Response:
    sandbox().reset()
    return jsonify({"status": "reset"})


@blp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})
