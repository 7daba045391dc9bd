"""Following one purchase: its resource for the buyer (and admins), and the page the
checkout's back URLs land on.

`GET /api/v1/advanced/credits/purchases/{id}`: the owner or an admin; anyone else gets 404
(its existence is private). ETag / If-None-Match: poll it cheaply until it is credited.

`GET /checkout/purchases/{external_reference}`: a small HTML page for the buyer's browser
coming back from MercadoPago. It needs no session: the key is the purchase's external
reference (128 random bits, known to the buyer's checkout only), and it shows only what
the buyer just did (the package's credits and where the purchase stands), never an id, a
name or an amount. The query MercadoPago appends (payment_id, status, ...) is ignored: the
status shown is ours. Not cached, and no Referer leaves with the reference in it.
"""

from __future__ import annotations

import html
import uuid
from typing import Any

import marshmallow as ma
from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from market.payments import purchases
from webapp import db
from webapp.auth import current_user, login_required
from webapp.errors import ProblemSchema

blp = Blueprint(
    "purchase_status",
    __name__,
    url_prefix="/api/v1/advanced/credits/purchases",
    description="One purchase, followed by its buyer",
)


class PaymentSchema(ma.Schema):
    id = ma.fields.String()
    status = ma.fields.String()
    status_detail = ma.fields.String(allow_none=True)
    amount = ma.fields.Decimal(as_string=True, places=2, allow_none=True)
    currency = ma.fields.String(allow_none=True)
    date_last_updated = ma.fields.DateTime(allow_none=True)


class TransitionSchema(ma.Schema):
    from_status = ma.fields.String(data_key="from", allow_none=True)
    to_status = ma.fields.String(data_key="to")
    reason = ma.fields.String()
    payment_id = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime(data_key="at")


class PurchaseDetailSchema(ma.Schema):
    id = ma.fields.String(attribute="purchase.id")
    status = ma.fields.String(
        attribute="purchase.status",
        metadata={
            "description": "pending, approved (credited), partially_refunded, rejected, "
            "cancelled, expired, refunded or charged_back"
        },
    )
    status_detail = ma.fields.String(attribute="purchase.status_detail", allow_none=True)
    credited = ma.fields.Boolean(metadata={"description": "The credits are in the wallet"})
    package_id = ma.fields.String(attribute="purchase.package_id")
    credits = ma.fields.Integer(attribute="purchase.credits")
    amount = ma.fields.Decimal(attribute="purchase.amount", as_string=True, places=2)
    currency = ma.fields.String(attribute="purchase.currency")
    refunded_credits = ma.fields.Integer(attribute="purchase.refunded_credits")
    unrecovered_credits = ma.fields.Integer(attribute="purchase.unrecovered_credits")
    checkout_url = ma.fields.String(attribute="checkout_url", allow_none=True)
    created_at = ma.fields.DateTime(attribute="purchase.created_at")
    expires_at = ma.fields.DateTime(attribute="purchase.expires_at")
    approved_at = ma.fields.DateTime(attribute="purchase.approved_at", allow_none=True)
    reversed_at = ma.fields.DateTime(attribute="purchase.reversed_at", allow_none=True)
    payments = ma.fields.List(ma.fields.Nested(PaymentSchema))
    timeline = ma.fields.List(ma.fields.Nested(TransitionSchema))


@blp.route("/<uuid:purchase_id>")
class PurchaseById(MethodView):
    @login_required
    @blp.etag
    @blp.response(200, PurchaseDetailSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, purchase_id: uuid.UUID) -> dict[str, Any]:
        """The purchase, its MercadoPago payments and its timeline (owner or admin)."""
        user = current_user()
        session = db.session()
        purchase = purchases.visible_purchase(
            session, purchase_id, viewer_id=user.id, is_admin=user.is_admin
        )
        view = purchases.purchase_view(session, purchase)
        settings = current_app.extensions["spartan.settings"]
        link = purchases.checkout(purchase, settings)["checkout_url"]
        return {**view, "checkout_url": link if purchase.status == "pending" else None}


# What the page says of each state: the buyer's words, not ours.
SAID = {
    "pending": "We are waiting for MercadoPago to confirm your payment. This page updates itself.",
    "approved": "Your credits are in your wallet.",
    "partially_refunded": "Your credits are in your wallet (part of the payment was refunded).",
    "rejected": "The payment did not go through. You can try again from the same checkout.",
    "cancelled": "The payment was cancelled.",
    "expired": "This purchase expired before it was paid.",
    "refunded": "This purchase was refunded.",
    "charged_back": "This payment was charged back.",
}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>Your purchase: {status}</title></head>
<body><main><h1>{credits} credits: {status}</h1><p id="said">{said}</p>
<p><a id="back" href="{back}">Back to Spartan Market</a></p></main></body></html>
"""


def return_page(reference: str) -> Response:
    """The purchase's status for the buyer back from the checkout (see the module's notes)."""
    purchase = purchases.by_reference(db.session(), reference[:64])
    if purchase is None:
        body, code = "<!doctype html><title>Not found</title><p>No such purchase.</p>", 404
    else:
        status = purchase.status
        body = PAGE.format(
            refresh='<meta http-equiv="refresh" content="5">\n' if status == "pending" else "",
            status=html.escape(status.replace("_", " ")),
            credits=purchase.credits,
            said=html.escape(SAID.get(status, "")),
            back=html.escape(current_app.extensions["spartan.settings"].frontend_url, quote=True),
        )
        code = 200
    response = Response(body, status=code, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


return_blp = Blueprint(
    "purchase_return",
    __name__,
    url_prefix="/checkout/purchases",
    description="The page the checkout's back URLs land on",
)
# Registered on Flask's own rule table, not flask-smorest's: a page, not part of the API.
FlaskBlueprint.add_url_rule(return_blp, "/<reference>", "return_page", return_page, methods=["GET"])
