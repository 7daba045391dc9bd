"""MercadoPago payment events: verify the signature, store the event, start its settlement.

No bearer auth: the x-signature HMAC is the authentication (market/payments/mercadopago/
signature.py: the SDK's validator, any age). Every form MercadoPago sends ends as "fetch this
payment and settle it": webhooks (`?data.id=&type=payment`), legacy IPN (`?id=&topic=payment`),
merchant orders (`merchant_order`: fetched, then each of its payments) and chargebacks
(`topic_chargebacks_wh`: the chargeback fetched, then its payment). Copies and replays carry
the same signed parts and answer 200 "duplicate"; other topics are recorded and answered 200
"ignored", as is a payment id that cannot be one. Unsigned or badly signed requests get 401
and leave nothing behind; so does a signed body that is not a JSON object or holds NUL
characters (400), and one larger than any notification (413, unread).
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from market.errors import WebhookSignatureError
from market.models.base import utcnow
from market.payments.mercadopago import events
from market.payments.mercadopago.signature import InvalidSignatureError, verify_notification
from webapp import db
from webapp.errors import ProblemSchema
from workflows.base import send
from workflows.payment_events import plan_for_event

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
# Merchant order and chargeback ids: MercadoPago's are digits or short tokens.
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Later than this (a retry), the lateness is logged at INFO.
LATE_S = 60


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


def _resource(kind: str) -> str | None:
    """The id the notification names: the query's `data.id` (webhooks, signed) or `id`
    (legacy IPN, whose signature has no id part). Never the body's: it is not signed."""
    value = (request.args.get("data.id") or request.args.get("id") or "").strip()
    if kind == events.PAYMENT:
        payment_id = _payment_id(value)
        return None if payment_id is None else str(payment_id)  # canonical: no leading zeros
    return value if _RESOURCE_ID.fullmatch(value) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


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
        request_id = request.headers.get("x-request-id")
        signature = request.headers.get("x-signature") or ""
        signed_id = request.args.get("data.id")
        try:
            lateness = verify_notification(
                x_signature=signature,
                x_request_id=request_id,
                data_id=signed_id,
                secret=settings.mercadopago_webhook_secret,
            )
        except InvalidSignatureError as exc:
            log.warning("MercadoPago notification refused: %s", exc.reason)
            raise WebhookSignatureError(exc.reason) from exc
        if not isinstance(raw, dict) or _has_nul(raw):
            abort(400, message="the notification body must be a JSON object, without NUL")
        kind = (
            request.args.get("type")
            or request.args.get("topic")
            or _text(body.get("type"))
            or _text(body.get("topic"))
        )[:64]
        if lateness > LATE_S:
            log.info("MercadoPago %s notification signed %.0f s ago", kind, lateness)
        data_id = _resource(kind) if kind in events.TOPICS else None
        if kind not in events.TOPICS:
            data_id = (signed_id or request.args.get("id") or "")[:64]
            if not kind or not _RESOURCE_ID.fullmatch(data_id):
                return {"status": "ignored"}
        elif data_id is None:
            return {"status": "ignored"}
        event_id = uuid.uuid4()
        # The job and its steps are written with the event, in its statement, only if the
        # event is new; then its chain is sent from the ids chosen here (nothing read back).
        job, owned_by_payment = (
            plan_for_event(event_id=event_id, kind=kind, data_id=data_id)
            if kind in events.TOPICS
            else (None, False)
        )
        stored = db.write_once(
            *events.store(
                event_id=event_id,
                dedupe_key=events.dedupe_key(
                    x_signature=signature, x_request_id=request_id, data_id=signed_id
                ),
                kind=kind,
                data_id=data_id,
                payment_id=int(data_id) if kind == events.PAYMENT else None,
                action=_text(body.get("action")),
                request_id=request_id,
                signed_at=utcnow() - timedelta(seconds=lateness),
                notification_id=_notification_id(body),
                body=body,
                processed=job is None,
                job=job,
                owned_by_payment=owned_by_payment,
            )
        )
        if stored is None:
            return {"status": "duplicate"}
        if job is None:
            log.info("MercadoPago notification of topic %r recorded, not acted on", kind)
            return {"status": "ignored"}
        # Committed: a publish lost now leaves a queued job (and an unprocessed event) that
        # the sweeps send again.
        send(job)
        return {"status": "accepted"}
