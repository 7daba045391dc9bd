"""The Checkout Pro page a buyer's browser opens at a preference's init_point: a plain HTML
form whose buttons ("Approve", "Reject", "Pending") play MercadoPago's test cardholders,
then a redirect to the preference's back URL with MercadoPago's query parameters."""

from __future__ import annotations

import html

from flask import Blueprint, Response, current_app, redirect, request

from sandbox.mercadopago.common import EXTENSION, ApiError, with_query
from sandbox.mercadopago.service import Sandbox

blp = Blueprint("checkout", __name__)

# Test cardholder names choose the outcome, as on MercadoPago's real test cards.
CARDHOLDERS = {"APRO": "approved", "OTHE": "rejected", "CONT": "in_process"}
LABELS = (("APRO", "Approve"), ("OTHE", "Reject"), ("CONT", "Pending"))
BACK_URL_FOR = {"approved": "success", "rejected": "failure", "in_process": "pending"}


def sandbox() -> Sandbox:
    return current_app.extensions[EXTENSION]


@blp.get("/checkout/v1/redirect")
def checkout_page() -> tuple[str, int]:
    pref_id = request.args.get("pref_id", "")
    try:
        pref = sandbox().preference(pref_id)
    except ApiError:
        return page("Checkout not found", "<p>No such preference.</p>"), 404
    rows = "".join(
        f"<tr><td>{html.escape(str(i.get('title', '')))}</td><td>{i['quantity']}</td>"
        f"<td>{i['unit_price']} {html.escape(str(i['currency_id']))}</td></tr>"
        for i in pref["items"]
    )
    try:
        sandbox().store.check_open(pref)
    except ApiError as exc:
        return page("Checkout closed", f"<p>{html.escape(exc.message)}</p>"), 400
    buttons = "".join(
        f'<button type="submit" name="cardholder" value="{holder}">{label}</button> '
        for holder, label in LABELS
    )
    content = (
        f"<table><tr><th>Item</th><th>Qty</th><th>Price</th></tr>{rows}</table>"
        f'<form method="post" action="/checkout/v1/redirect">'
        f'<input type="hidden" name="pref_id" value="{html.escape(pref_id)}">{buttons}</form>'
    )
    return page("MercadoPago sandbox checkout", content), 200


@blp.post("/checkout/v1/redirect")
def checkout_pay() -> Response | tuple[str, int]:
    status = CARDHOLDERS.get(request.form.get("cardholder", ""))
    if status is None:
        return page("Checkout", "<p>Unknown cardholder.</p>"), 400
    try:
        payment = sandbox().pay(request.form.get("pref_id", ""), status)
    except ApiError as exc:
        return page("Checkout", f"<p>{html.escape(exc.message)}</p>"), exc.status
    pref = sandbox().preference(payment["additional_info"]["preference_id"])
    back_url = (pref.get("back_urls") or {}).get(BACK_URL_FOR[status])
    if not back_url:
        text = f"<p>Payment {payment['id']}: {html.escape(status)}.</p>"
        return page("Payment result", text), 200
    # MercadoPago's own redirect parameters (external_reference=null when absent).
    params = [
        ("collection_id", payment["id"]),
        ("collection_status", status),
        ("payment_id", payment["id"]),
        ("status", status),
        ("external_reference", payment["external_reference"]),
        ("payment_type", payment["payment_type_id"]),
        ("merchant_order_id", payment["order"]["id"]),
        ("preference_id", pref["id"]),
        ("site_id", "MLA"),
        ("processing_mode", "aggregator"),
        ("merchant_account_id", None),
    ]
    return redirect(with_query(back_url, params), code=302)


def page(title: str, content: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{content}</body></html>"
    )
