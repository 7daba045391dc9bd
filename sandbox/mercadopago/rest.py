"""MercadoPago's REST API (bearer token, chaos applies), as the official SDK calls it."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox.mercadopago.common import EXTENSION, ApiError
from sandbox.mercadopago.service import Sandbox

blp = Blueprint("rest", __name__)


def sandbox() -> Sandbox:
    return current_app.extensions[EXTENSION]


def body() -> dict:
    """The JSON object posted (an empty body is {}), or a 400."""
    # force: scripts posting with curl often omit the JSON content type.
    data = request.get_json(force=True, silent=True) if request.get_data() else {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid body: a JSON object is expected")
    return data


@blp.before_request
def guard() -> None:
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    sandbox().count_call(f"{request.method} {rule}")
    sandbox().chaos.apply()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode(), sandbox().access_token.encode()
    ):
        raise ApiError(401, "invalid access token", "unauthorized")


@blp.post("/checkout/preferences")
def create_preference() -> tuple[Response, int]:
    key = request.headers.get("x-idempotency-key")
    pref = sandbox().create_preference(
        request.get_json(force=True, silent=True), key, request.host_url
    )
    return jsonify(pref), 201


@blp.get("/checkout/preferences/<pref_id>")
def get_preference(pref_id: str) -> Response:
    return jsonify(sandbox().preference(pref_id))


@blp.get("/v1/payments/search")
def search_payments() -> Response:
    return jsonify(sandbox().search_payments(request.args.to_dict()))


@blp.get("/v1/payments/<int:payment_id>")
def get_payment(payment_id: int) -> Response:
    return jsonify(sandbox().payment(payment_id))


@blp.post("/v1/payments/<int:payment_id>/refunds")
def create_refund(payment_id: int) -> tuple[Response, int]:
    key = request.headers.get("x-idempotency-key")
    return jsonify(sandbox().refund(payment_id, body().get("amount"), key)), 201


@blp.get("/v1/payments/<int:payment_id>/refunds")
def list_refunds(payment_id: int) -> Response:
    return jsonify(sandbox().payment(payment_id)["refunds"])


@blp.get("/v1/payments/<int:payment_id>/refunds/<int:refund_id>")
def get_refund(payment_id: int, refund_id: int) -> Response:
    found = [r for r in sandbox().payment(payment_id)["refunds"] if r["id"] == refund_id]
    if not found:
        raise ApiError(404, f"refund {refund_id} not found", "not_found")
    return jsonify(found[0])


@blp.get("/v1/chargebacks/search")
def search_chargebacks() -> Response:
    return jsonify(sandbox().search_chargebacks(request.args.get("payment_id")))


@blp.get("/v1/chargebacks/<chargeback_id>")
def get_chargeback(chargeback_id: str) -> Response:
    return jsonify(sandbox().chargeback(chargeback_id))


@blp.get("/merchant_orders/<int:order_id>")
def get_merchant_order(order_id: int) -> Response:
    return jsonify(sandbox().merchant_order(order_id))


@blp.get("/users/me")
def get_user() -> Response:
    return jsonify({"id": sandbox().collector_id, "nickname": "TESTSANDBOX", "site_id": "MLA"})
