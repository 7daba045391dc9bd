"""MercadoPago notifications: verify the signature, store in the inbox, start settlement.

No bearer auth: the x-signature HMAC is the authentication. Unsigned, badly signed or stale
requests get 401 and leave nothing behind; so do a signed body that is not a JSON object or
holds NUL characters (400), and one larger than any notification (413, unread). A
notification that names no storable payment id (ASCII digits within BIGINT) is answered 200
"ignored". A stored notification answers 200 at once; the work (asking MercadoPago for the
payment, applying it) happens in the settlement job.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert

from market import settlement
from market.errors import WebhookSignatureError
from market.models import MercadoPagoNotification
from market.mp_signature import InvalidSignatureError, verify_notification
from webapp import db
from webapp.errors import ProblemSchema
from workflows.settlement import start_settlement

log = logging.getLogger(__name__)

blp = Blueprint(
    "mp_webhooks",
    __name__,
    url_prefix="/api/v1/advanced/webhooks",
    description="Incoming provider notifications",
)


# A MercadoPago notification is about 1 KB; a body far larger is not one (413, unread).
MAX_BODY_BYTES = 64 * 1024
# Payment and notification ids are stored as BIGINT.
MAX_ID = 2**63 - 1


@blp.before_request
def _cap_body() -> None:
    """Reading stops at the cap (413), whatever Content-Length says or omits."""
    request.max_content_length = MAX_BODY_BYTES


def _payment_id(data_id: str | None) -> int | None:
    """The payment id a notification names, if it can be one (ASCII digits, a BIGINT)."""
    if not data_id or not (data_id.isascii() and data_id.isdigit()):
        return None
    value = int(data_id)
    return value if value <= MAX_ID else None


def _notification_id(body: dict[str, Any]) -> int | None:
    value = body.get("id")
    # bool is an int to Python, not to PostgreSQL.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    return None


def _has_nul(value: Any) -> bool:
    """Whether a key or string of the parsed body holds U+0000 (PostgreSQL's jsonb and text
    refuse it). Iterative: the body may nest as deep as the JSON parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _data_id(body: dict[str, Any]) -> str | None:
    # MercadoPago signs the query string's data.id; the body's is the fallback.
    query = request.args.get("data.id")
    if query:
        return query.strip()
    data = body.get("data")
    if isinstance(data, dict) and data.get("id") is not None:
        return str(data["id"]).strip()
    return None


def _dedupe_key(body: dict[str, Any], kind: str, data_id: str, request_id: str | None) -> str:
    # MercadoPago's notification id is the same in every retry and copy of one notification;
    # a later change of the same payment is a new notification with a new id.
    if body.get("id") is not None:
        return f"n:{body['id']}"
    return f"r:{request_id}:{kind}:{data_id}:{body.get('action')}"


@blp.route("/mercadopago")
class MercadoPagoWebhook(MethodView):
    @blp.response(200)
    @blp.alt_response(400, schema=ProblemSchema, description="The body is not a JSON object")
    @blp.alt_response(401, schema=ProblemSchema)
    @blp.alt_response(413, schema=ProblemSchema, description="Larger than any notification")
    def post(self) -> dict[str, Any]:
        """Receive a signed MercadoPago notification (x-signature, x-request-id headers)."""
        settings = current_app.extensions["spartan.settings"]
        raw = request.get_json(silent=True, force=True)
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        data_id = _data_id(body)
        request_id = request.headers.get("x-request-id")
        try:
            verify_notification(
                x_signature=request.headers.get("x-signature"),
                x_request_id=request_id,
                data_id=data_id,
                secret=settings.mercadopago_webhook_secret,
                tolerance_s=settings.webhook_signature_tolerance_s,
            )
        except InvalidSignatureError as exc:
            log.warning("MercadoPago notification refused: %s", exc.reason)
            raise WebhookSignatureError(exc.reason) from exc
        if not isinstance(raw, dict) or _has_nul(raw):
            abort(400, message="the notification body must be a JSON object, without NUL")
        kind = str(request.args.get("type") or body.get("type") or request.args.get("topic") or "")
        payment_id = _payment_id(data_id)
        if kind != "payment" or payment_id is None:
            return {"status": "ignored"}
        data_id = str(payment_id)  # canonical (no leading zeros): what the column holds
        session = db.session()
        row_id = session.execute(
            insert(MercadoPagoNotification)
            .values(
                dedupe_key=_dedupe_key(body, kind, data_id, request_id)[:200],
                notification_id=_notification_id(body),
                type=kind,
                action=str(body.get("action") or "")[:64] or None,
                data_id=data_id,
                request_id=(request_id or "")[:128] or None,
                body=body,
            )
            .on_conflict_do_nothing(index_elements=[MercadoPagoNotification.dedupe_key])
            .returning(MercadoPagoNotification.id)
        ).scalar_one_or_none()
        if row_id is None:
            session.rollback()
            return {"status": "duplicate"}
        purchase = settlement.purchase_of_payment(session, payment_id)
        job = start_settlement(
            session,
            payment_id=payment_id,
            owner_id=purchase.user_id if purchase else None,
            notification_id=row_id,
        )
        # One UPDATE, not a load then a flush: this endpoint's cost is its round trips.
        session.execute(
            update(MercadoPagoNotification)
            .where(MercadoPagoNotification.id == row_id)
            .values(job_id=job.id)
        )
        session.commit()
        return {"status": "accepted"}
