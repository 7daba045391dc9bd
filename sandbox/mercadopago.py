"""Offline stand-in for MercadoPago: REST API, Checkout Pro page and signed, retried webhooks.

    python -m sandbox.mercadopago [--host 127.0.0.1] [--port 8090]

Environment: MERCADOPAGO_ACCESS_TOKEN, MERCADOPAGO_WEBHOOK_SECRET, SANDBOX_WEBHOOK_URL (the
panel's webhook URL, used when a preference has no notification_url), SANDBOX_PUBLIC_URL, PORT.

Control API for scripts and tests (JSON, no auth; "webhook" is send, withhold or duplicate):
    POST /_sandbox/preferences/<pref_id>/pay  {"status", "status_detail"?, "webhook"?, "copies"?}
    POST /_sandbox/payments/<id>/status       {"status", "status_detail"?, "webhook"?}
    POST /_sandbox/payments/<id>/refund       {"amount"?, "webhook"?}
    POST /_sandbox/payments/<id>/chargeback   {"webhook"?}
    POST /_sandbox/payments/<id>/notify       {"request_id"?, "ts"?}  (one attempt, now)
    GET  /_sandbox/webhooks[?payment_id=]     the delivery log, one entry per attempt
    POST /_sandbox/chaos  {"error_rate", "timeout_rate", "delay_ms", "error_status", "hang_s",
                           "seed"}                  (REST endpoints only; {} turns it off)
    POST /_sandbox/reset
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import html
import itertools
import json
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Flask, Response, jsonify, redirect, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

EXTENSION = "mercadopago_sandbox"
STATUS_DETAIL = {
    "approved": "accredited",
    "authorized": "pending_capture",
    "pending": "pending_waiting_payment",
    "in_process": "pending_contingency",
    "in_mediation": "in_mediation",
    "rejected": "cc_rejected_other_reason",
    "cancelled": "expired",
    "refunded": "refunded",
    "charged_back": "settled",
}
PAYMENT_STATUSES = frozenset(STATUS_DETAIL)
PAID = ("approved", "refunded")  # a refunded payment was paid, then returned
# Test cardholder names choose the outcome, as on MercadoPago's real test cards.
CARDHOLDERS = {"APRO": "approved", "OTHE": "rejected", "CONT": "in_process"}
BACK_URL_FOR = {"approved": "success", "rejected": "failure", "in_process": "pending"}
ORDER_PAYMENT_FIELDS = ("id", "status", "status_detail", "transaction_amount", "currency_id")
ORDER_PAYMENT_FIELDS += ("date_created", "date_approved", "date_last_updated")
ARGENTINA = timezone(timedelta(hours=-3))
CENT = Decimal("0.01")


class ApiError(Exception):
    """An error answered in MercadoPago's JSON shape."""

    def __init__(self, status: int, message: str, error: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.message, self.error = status, message, error


def _now() -> str:
    return datetime.now(ARGENTINA).isoformat(timespec="milliseconds")


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _total(items: list[dict[str, Any]]) -> Decimal:
    return sum((_dec(i["quantity"]) * _dec(i["unit_price"]) for i in items), Decimal(0))


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _with_query(url: str, params: Iterable[tuple[str, Any]]) -> str:
    """`url` with `params` appended after whatever query it already has."""
    extra = urlencode([(k, "null" if v is None else v) for k, v in params])
    base, _, fragment = url.partition("#")
    joined = f"{base}{'&' if urlsplit(base).query else '?'}{extra}"
    return f"{joined}#{fragment}" if fragment else joined


def sign(secret: str, data_id: str, request_id: str, ts: str) -> str:
    """The `x-signature` header MercadoPago would send for these values."""
    manifest = f"id:{data_id};request-id:{request_id};ts:{ts};"
    digest = hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    return f"ts={ts},v1={digest}"


class Sandbox:
    """The sandbox's state and behaviour; every method is thread safe."""

    def __init__(
        self,
        *,
        access_token: str,
        webhook_secret: str,
        webhook_url: str | None,
        public_url: str | None,
        retry_delays: tuple[float, ...],
        webhook_timeout_s: float,
        collector_id: int,
        id_offset: int,
    ) -> None:
        self.access_token, self.webhook_secret = access_token, webhook_secret
        self.webhook_url, self.public_url = webhook_url, public_url
        self.retry_delays, self.webhook_timeout_s = tuple(retry_delays), webhook_timeout_s
        self.collector_id = collector_id
        self._lock = threading.RLock()
        # Ids survive reset: a backend database may still hold ids handed out before it.
        self._payment_ids = itertools.count(1_000_000_001 + id_offset)
        self._order_ids = itertools.count(20_000_000_001 + id_offset)
        self._refund_ids = itertools.count(3_000_000_001 + id_offset)
        self._notification_ids = itertools.count(100_000_000_001 + id_offset)
        self._cancel = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Forget everything, turn chaos off and cancel pending webhook retries."""
        with self._lock:
            self._cancel.set()
            self._cancel = threading.Event()
            self.preferences: dict[str, dict[str, Any]] = {}
            self.payments: dict[int, dict[str, Any]] = {}
            self.orders: dict[int, dict[str, Any]] = {}
            self._idempotent: dict[tuple[str, ...], Any] = {}
            self._last_notification: dict[int, dict[str, Any]] = {}
            self.deliveries: deque[dict[str, Any]] = deque(maxlen=2000)
            self._delivery_ids = itertools.count(1)
            self.chaos: dict[str, Any] = {"error_rate": 0.0, "timeout_rate": 0.0, "delay_ms": 0}
            self.chaos |= {"error_status": 500, "hang_s": 30.0}
            self._rng = random.Random()

    def close(self) -> None:
        """Stop webhook retries and wake chaos sleepers (on shutdown)."""
        self._cancel.set()

    # REST API -----------------------------------------------------------------------------

    def create_preference(self, body: Any, key: str | None, base_url: str) -> dict[str, Any]:
        """Validate and store a preference; the same idempotency key returns the same one."""
        if not isinstance(body, dict):
            raise ApiError(400, "invalid body: a JSON object is expected")
        items = _validate_items(body.get("items"))
        back_urls = body.get("back_urls") or {}
        if not isinstance(back_urls, dict):
            raise ApiError(400, "back_urls must be an object")
        if body.get("auto_return") and not back_urls.get("success"):
            # MercadoPago's own check; a common integration mistake.
            raise ApiError(400, "auto_return invalid. back_url.success must be defined")
        url = body.get("notification_url")
        if url is not None and (not isinstance(url, str) or not _is_http_url(url)):
            raise ApiError(400, "notification_url attribute must be url valid")
        with self._lock:
            if key and ("preference", key) in self._idempotent:
                return dict(self.preferences[self._idempotent[("preference", key)]])
            pref_id = f"{self.collector_id}-{uuid.uuid4()}"
            checkout = f"{self.public_url or base_url.rstrip('/')}/checkout/v1/redirect"
            checkout = _with_query(checkout, [("pref_id", pref_id)])
            pref = {
                **body,
                "id": pref_id,
                "items": items,
                "init_point": checkout,
                "sandbox_init_point": checkout,
                "date_created": _now(),
                "collector_id": self.collector_id,
                "client_id": str(self.collector_id),
                "operation_type": "regular_payment",
                "site_id": "MLA",
            }
            self.preferences[pref_id] = pref
            if key:
                self._idempotent[("preference", key)] = pref_id
            return dict(pref)

    def preference(self, pref_id: str) -> dict[str, Any]:
        """The stored preference, or a 404."""
        with self._lock:
            if pref_id not in self.preferences:
                raise ApiError(404, f"preference {pref_id} not found", "not_found")
            return dict(self.preferences[pref_id])

    def payment(self, payment_id: int) -> dict[str, Any]:
        """A copy of the payment, or a 404."""
        with self._lock:
            if payment_id not in self.payments:
                raise ApiError(404, "Payment not found", "not_found")
            return copy.deepcopy(self.payments[payment_id])

    def search_payments(self, args: dict[str, str]) -> dict[str, Any]:
        """One page of payments filtered by external_reference/status, sorted as asked."""
        try:
            limit, offset = int(args.get("limit", 30)), int(args.get("offset", 0))
        except ValueError as exc:
            raise ApiError(400, "limit and offset must be integers") from exc
        with self._lock:
            found = [
                p
                for p in self.payments.values()
                if all(
                    str(p.get(field)) == args[field]
                    for field in ("external_reference", "status")
                    if field in args
                )
            ]
            sort = args.get("sort", "date_created")
            found.sort(key=lambda p: (str(p.get(sort)), p["id"]))
            if args.get("criteria", "asc") == "desc":
                found.reverse()
            page = copy.deepcopy(found[offset : offset + limit])
        return {"paging": {"total": len(found), "limit": limit, "offset": offset}, "results": page}

    def refund(self, payment_id: int, amount: Any, key: str | None) -> tuple[dict[str, Any], bool]:
        """Refund `amount` (None: the rest); the flag is False for an idempotent replay."""
        with self._lock:
            if key and ("refund", str(payment_id), key) in self._idempotent:
                return dict(self._idempotent[("refund", str(payment_id), key)]), False
            payment = self.payments.get(payment_id)
            if payment is None:
                raise ApiError(404, "Payment not found", "not_found")
            if payment["status"] != "approved":
                raise ApiError(400, f"Payment with status {payment['status']} cannot be refunded")
            total = _dec(payment["transaction_amount"])
            left = total - _dec(payment["transaction_amount_refunded"])
            try:
                value = left if amount is None else _dec(amount).quantize(CENT)
                valid = 0 < value <= left
            except InvalidOperation:
                valid = False
            if not valid:
                raise ApiError(400, f"amount must be a number within 0 and {left} (refundable)")
            refund = {
                "id": next(self._refund_ids),
                "payment_id": payment_id,
                "amount": _num(value),
                "status": "approved",
                "date_created": _now(),
                "source": {"id": str(self.collector_id), "type": "collector"},
                "refund_mode": "standard",
            }
            refunded = total - left + value
            payment["refunds"].append(refund)
            payment["transaction_amount_refunded"] = _num(refunded)
            if refunded == total:
                payment["status"] = payment["status_detail"] = "refunded"
            else:
                payment["status_detail"] = "partially_refunded"
            payment["date_last_updated"] = _now()
            if key:
                self._idempotent[("refund", str(payment_id), key)] = refund
            return dict(refund), True

    def merchant_order(self, order_id: int) -> dict[str, Any]:
        """The merchant order with its payments and amounts computed from them, or a 404."""
        with self._lock:
            if order_id not in self.orders:
                raise ApiError(404, f"Merchant Order {order_id} not found", "not_found")
            order = dict(self.orders[order_id])
            pref = self.preferences[order["preference_id"]]
            payments = [p for p in self.payments.values() if p["order"]["id"] == order_id]
        total = _total(pref["items"]).quantize(CENT)
        paid = sum(
            (_dec(p["transaction_amount"]) for p in payments if p["status"] in PAID), Decimal(0)
        )
        refunded = sum((_dec(p["transaction_amount_refunded"]) for p in payments), Decimal(0))
        if paid >= total:
            state = "reverted" if refunded >= paid else "partially_reverted" if refunded else "paid"
        elif any(p["status"] in ("pending", "in_process") for p in payments):
            state = "payment_in_process"
        else:
            state = "partially_paid" if paid else "payment_required"
        order |= {
            "status": "closed" if paid >= total else "opened",
            "order_status": state,
            "total_amount": _num(total),
            "paid_amount": _num(paid),
            "refunded_amount": _num(refunded),
            "items": pref["items"],
            "last_updated": max(
                [order["date_created"], *(p["date_last_updated"] for p in payments)]
            ),
            "payments": [
                {key: p[key] for key in ORDER_PAYMENT_FIELDS}
                | {"total_paid_amount": p["transaction_amount"]}
                | {"amount_refunded": p["transaction_amount_refunded"]}
                for p in payments
            ],
        }
        return order

    # Payments made at the checkout or through the control API ---------------------------------

    def pay(self, pref_id: str, status: str, status_detail: str | None) -> dict[str, Any]:
        """Create a payment for the preference (and its merchant order on the first one)."""
        if status not in PAYMENT_STATUSES - {"refunded", "charged_back"}:
            raise ApiError(400, f"unknown payment status {status!r}")
        with self._lock:
            pref = self.preferences.get(pref_id)
            if pref is None:
                raise ApiError(404, f"preference {pref_id} not found", "not_found")
            order_id = next(
                (o["id"] for o in self.orders.values() if o["preference_id"] == pref_id), None
            )
            now = _now()
            if order_id is None:
                order_id = next(self._order_ids)
                self.orders[order_id] = {
                    "id": order_id,
                    "preference_id": pref_id,
                    "external_reference": pref.get("external_reference"),
                    "notification_url": pref.get("notification_url"),
                    "collector": {"id": self.collector_id},
                    "date_created": now,
                    "is_test": True,
                    "cancelled": False,
                }
            items = pref["items"]
            payment_id = next(self._payment_ids)
            self.payments[payment_id] = {
                "id": payment_id,
                "status": status,
                "status_detail": status_detail or STATUS_DETAIL[status],
                "external_reference": pref.get("external_reference"),
                "transaction_amount": _num(_total(items).quantize(CENT)),
                "transaction_amount_refunded": 0,
                "currency_id": items[0].get("currency_id", "ARS"),
                "description": items[0].get("title"),
                "date_created": now,
                "date_approved": now if status == "approved" else None,
                "date_last_updated": now,
                "live_mode": False,
                "metadata": copy.deepcopy(pref.get("metadata") or {}),
                # The real API does not echo the preference id; this makes tests easier to read.
                "additional_info": {"items": items, "preference_id": pref_id},
                "order": {"id": order_id, "type": "mercadopago"},
                "refunds": [],
                "payer": {"id": "1234567", "email": "test_user_80507629@testuser.com"},
                "collector_id": self.collector_id,
                "payment_method_id": "visa",
                "payment_type_id": "credit_card",
                "installments": 1,
                "operation_type": "regular_payment",
                "notification_url": pref.get("notification_url"),
                "captured": True,
            }
            return self.payment(payment_id)

    def set_status(self, payment_id: int, status: str, status_detail: str | None) -> dict[str, Any]:
        """Move the payment to `status` (any, e.g. pending to approved)."""
        if status not in PAYMENT_STATUSES:
            raise ApiError(400, f"unknown payment status {status!r}")
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                raise ApiError(404, "Payment not found", "not_found")
            now = _now()
            payment["status"] = status
            payment["status_detail"] = status_detail or STATUS_DETAIL[status]
            payment["date_last_updated"] = now
            if status == "approved" and not payment["date_approved"]:
                payment["date_approved"] = now
            return self.payment(payment_id)

    def chargeback(self, payment_id: int) -> dict[str, Any]:
        """Turn an approved payment into charged_back."""
        with self._lock:
            if self.payment(payment_id)["status"] != "approved":
                raise ApiError(400, "only an approved payment can be charged back")
            return self.set_status(payment_id, "charged_back", None)

    # Webhooks ---------------------------------------------------------------------------------

    def notification_url(self, payment_id: int) -> str | None:
        """The preference's notification_url, else the panel-style webhook URL, else None."""
        with self._lock:
            pref_id = self.payments[payment_id]["additional_info"]["preference_id"]
            return self.preferences[pref_id].get("notification_url") or self.webhook_url

    def notify(self, payment_id: int, action: str, mode: str = "send", copies: int = 1) -> None:
        """Record a notification for the payment and, unless withheld, deliver it in background."""
        with self._lock:
            body = {
                "action": action,
                "api_version": "v1",
                "data": {"id": str(payment_id)},
                "date_created": _now(),
                "id": next(self._notification_ids),
                "live_mode": False,
                "type": "payment",
                "user_id": str(self.collector_id),
            }
            self._last_notification[payment_id] = body
            url, cancel = self.notification_url(payment_id), self._cancel
        if mode == "withhold" or url is None:
            return
        copies = copies if mode == "duplicate" else 1
        request_id, ts = str(uuid.uuid4()), str(int(time.time() * 1000))
        # Copies start together (a barrier) to exercise the receiver's handling of races.
        barrier = threading.Barrier(copies) if copies > 1 else None
        for _ in range(copies):
            threading.Thread(
                target=self._deliver_with_retries,
                args=(url, body, request_id, ts, cancel, barrier),
                name=f"mp-sandbox-webhook-{payment_id}",
                daemon=True,
            ).start()

    def resend(self, payment_id: int, request_id: str | None, ts: str | None) -> dict[str, Any]:
        """Deliver the payment's last notification once, now; exact headers when given."""
        self.payment(payment_id)
        if self.notification_url(payment_id) is None:
            raise ApiError(409, "no notification_url and no SANDBOX_WEBHOOK_URL", "conflict")
        with self._lock:
            if payment_id not in self._last_notification:
                self.notify(payment_id, "payment.updated", mode="withhold")
            body = self._last_notification[payment_id]
            url = self.notification_url(payment_id)
        request_id = request_id or str(uuid.uuid4())
        return self._deliver(url, body, request_id, ts or str(int(time.time() * 1000)), 1, 1)

    def delivery_log(self, payment_id: str | None = None) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first; only the payment's when given."""
        with self._lock:
            entries = list(self.deliveries)
        return [e for e in entries if payment_id is None or str(e["payment_id"]) == payment_id]

    def _deliver_with_retries(
        self,
        url: str,
        body: dict[str, Any],
        request_id: str,
        ts: str,
        cancel: threading.Event,
        barrier: threading.Barrier | None,
    ) -> None:
        if barrier is not None:
            barrier.wait(timeout=10)
        for attempt, delay in enumerate((0.0, *self.retry_delays), start=1):
            if cancel.wait(delay) if delay else cancel.is_set():
                return
            if attempt > 1:
                # A retry is signed afresh, or receivers would reject it for a stale ts.
                ts = str(int(time.time() * 1000))
            entry = self._deliver(url, body, request_id, ts, attempt, len(self.retry_delays) + 1)
            if entry["outcome"] == "delivered":
                return

    def _deliver(
        self, url: str, body: dict[str, Any], request_id: str, ts: str, attempt: int, last: int
    ) -> dict[str, Any]:
        data_id = body["data"]["id"]
        target = _with_query(url, [("data.id", data_id), ("type", body["type"])])
        headers = {
            "Content-Type": "application/json",
            "x-request-id": request_id,
            "x-signature": sign(self.webhook_secret, data_id, request_id, ts),
        }
        status_code, error = None, None
        try:
            answer = requests.post(
                target, data=json.dumps(body), headers=headers, timeout=self.webhook_timeout_s
            )
            status_code = answer.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        # MercadoPago counts only 200 and 201 as received.
        ok = status_code in (200, 201)
        entry = {
            "url": target,
            "payment_id": int(data_id),
            "notification_id": body["id"],
            "action": body["action"],
            "attempt": attempt,
            "status_code": status_code,
            "error": error,
            "outcome": "delivered" if ok else "retrying" if attempt < last else "gave_up",
            "headers": headers,
            "body": body,
            "at": _now(),
        }
        with self._lock:
            entry["id"] = next(self._delivery_ids)
            self.deliveries.append(entry)
        return entry

    # Chaos ------------------------------------------------------------------------------------

    def set_chaos(self, config: dict[str, Any]) -> dict[str, Any]:
        """Turn on random failures of the REST API (all zero: off); returns the settings."""
        try:
            chaos = {
                "error_rate": float(config.get("error_rate", 0)),
                "timeout_rate": float(config.get("timeout_rate", 0)),
                "delay_ms": int(config.get("delay_ms", 0)),
                "error_status": int(config.get("error_status", 500)),
                "hang_s": float(config.get("hang_s", 30)),
            }
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"invalid chaos settings: {exc}") from exc
        if not (
            0 <= chaos["error_rate"] <= 1
            and 0 <= chaos["timeout_rate"] <= 1
            and chaos["delay_ms"] >= 0
            and 400 <= chaos["error_status"] <= 599
            and chaos["hang_s"] >= 0
        ):
            raise ApiError(400, "rates within 0..1, delay_ms and hang_s >= 0, error_status 4xx/5xx")
        with self._lock:
            self.chaos = chaos
            self._rng = random.Random(config.get("seed"))
            return dict(self.chaos)

    def apply_chaos(self) -> None:
        """Sleep or fail this REST request as the chaos settings say."""
        with self._lock:
            chaos, cancel = dict(self.chaos), self._cancel
            roll_timeout, roll_error = self._rng.random(), self._rng.random()
        if chaos["delay_ms"]:
            cancel.wait(chaos["delay_ms"] / 1000)
        if roll_timeout < chaos["timeout_rate"]:
            cancel.wait(chaos["hang_s"])
        if roll_error < chaos["error_rate"]:
            raise ApiError(chaos["error_status"], "sandbox chaos: injected failure", "chaos")


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _validate_items(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not items:
        raise ApiError(400, "items needed")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"items[{index}] must be an object")
        quantity, price = item.get("quantity"), item.get("unit_price")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise ApiError(400, f"items[{index}].quantity must be a positive integer")
        if isinstance(price, bool) or not isinstance(price, int | float) or price <= 0:
            raise ApiError(400, f"items[{index}].unit_price must be a positive number")
        checked.append({"currency_id": "ARS", **item})
    return checked


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
) -> Flask:
    """The sandbox as a Flask app; `public_url` None means "as the browser reached us"."""
    app = Flask(__name__)
    sandbox = Sandbox(
        access_token=access_token,
        webhook_secret=webhook_secret,
        webhook_url=webhook_url,
        public_url=public_url.rstrip("/") if public_url else None,
        retry_delays=tuple(webhook_retry_delays),
        webhook_timeout_s=webhook_timeout_s,
        collector_id=collector_id,
        id_offset=id_offset,
    )
    app.extensions[EXTENSION] = sandbox

    def body() -> dict[str, Any]:
        # force: scripts posting with curl often omit the JSON content type.
        data = request.get_json(force=True, silent=True) if request.get_data() else {}
        if not isinstance(data, dict):
            raise ApiError(400, "invalid body: a JSON object is expected")
        return data

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> tuple[Response, int]:
        payload = {"message": error.message, "error": error.error, "status": error.status}
        return jsonify(payload | {"cause": []}), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        slug = (error.name or "error").lower().replace(" ", "_")
        return api_error(ApiError(error.code or 500, error.description or slug, slug))

    @app.before_request
    def guard() -> None:
        if request.path.startswith(("/_sandbox/", "/checkout/v1/")):
            return
        sandbox.apply_chaos()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), sandbox.access_token.encode()
        ):
            raise ApiError(401, "invalid access token", "unauthorized")

    # REST API --------------------------------------------------------------------------------

    @app.post("/checkout/preferences")
    def create_preference() -> tuple[Response, int]:
        key = request.headers.get("x-idempotency-key")
        pref = sandbox.create_preference(
            request.get_json(force=True, silent=True), key, request.host_url
        )
        return jsonify(pref), 201

    @app.get("/checkout/preferences/<pref_id>")
    def get_preference(pref_id: str) -> Response:
        return jsonify(sandbox.preference(pref_id))

    @app.get("/v1/payments/search")
    def search_payments() -> Response:
        return jsonify(sandbox.search_payments(request.args.to_dict()))

    @app.get("/v1/payments/<int:payment_id>")
    def get_payment(payment_id: int) -> Response:
        return jsonify(sandbox.payment(payment_id))

    @app.post("/v1/payments/<int:payment_id>/refunds")
    def create_refund(payment_id: int) -> tuple[Response, int]:
        key = request.headers.get("x-idempotency-key")
        refund, created = sandbox.refund(payment_id, body().get("amount"), key)
        if created:
            sandbox.notify(payment_id, "payment.updated")
        return jsonify(refund), 201

    @app.get("/v1/payments/<int:payment_id>/refunds")
    def list_refunds(payment_id: int) -> Response:
        return jsonify(sandbox.payment(payment_id)["refunds"])

    @app.get("/merchant_orders/<int:order_id>")
    def get_merchant_order(order_id: int) -> Response:
        return jsonify(sandbox.merchant_order(order_id))

    @app.get("/users/me")
    def get_user() -> Response:
        return jsonify({"id": sandbox.collector_id, "nickname": "TESTSANDBOX", "site_id": "MLA"})

    # Checkout Pro page --------------------------------------------------------------------------

    @app.get("/checkout/v1/redirect")
    def checkout_page() -> tuple[str, int]:
        pref_id = request.args.get("pref_id", "")
        try:
            pref = sandbox.preference(pref_id)
        except ApiError:
            return _page("Checkout not found", "<p>No such preference.</p>"), 404
        rows = "".join(
            f"<tr><td>{html.escape(str(i.get('title', '')))}</td><td>{i['quantity']}</td>"
            f"<td>{i['unit_price']} {html.escape(str(i['currency_id']))}</td></tr>"
            for i in pref["items"]
        )
        buttons = "".join(
            f'<button name="cardholder" value="{holder}">{label}</button> '
            for holder, label in (("APRO", "Approve"), ("OTHE", "Reject"), ("CONT", "Pending"))
        )
        content = (
            f"<table><tr><th>Item</th><th>Qty</th><th>Price</th></tr>{rows}</table>"
            f'<form method="post" action="/checkout/v1/redirect">'
            f'<input type="hidden" name="pref_id" value="{html.escape(pref_id)}">{buttons}</form>'
        )
        return _page("MercadoPago sandbox checkout", content), 200

    @app.post("/checkout/v1/redirect")
    def checkout_pay() -> Response | tuple[str, int]:
        status = CARDHOLDERS.get(request.form.get("cardholder", ""))
        if status is None:
            return _page("Checkout", "<p>Unknown cardholder.</p>"), 400
        try:
            payment = sandbox.pay(request.form.get("pref_id", ""), status, None)
        except ApiError as exc:
            return _page("Checkout", f"<p>{html.escape(exc.message)}</p>"), 404
        sandbox.notify(payment["id"], "payment.created")
        pref = sandbox.preference(payment["additional_info"]["preference_id"])
        back_url = (pref.get("back_urls") or {}).get(BACK_URL_FOR[status])
        if not back_url:
            text = f"<p>Payment {payment['id']}: {html.escape(status)}.</p>"
            return _page("Payment result", text), 200
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
        return redirect(_with_query(back_url, params), code=302)

    # Control API ------------------------------------------------------------------------------

    def webhook_args(data: dict[str, Any]) -> tuple[str, int]:
        """The webhook mode and copies asked for, checked before anything changes."""
        mode, copies = data.get("webhook", "send"), data.get("copies", 2)
        if mode not in ("send", "withhold", "duplicate"):
            raise ApiError(400, "webhook must be send, withhold or duplicate")
        if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 20:
            raise ApiError(400, "copies must be an integer within 1..20")
        return mode, copies

    @app.post("/_sandbox/preferences/<pref_id>/pay")
    def control_pay(pref_id: str) -> tuple[Response, int]:
        data = body()
        mode, copies = webhook_args(data)
        payment = sandbox.pay(
            pref_id, str(data.get("status", "approved")), data.get("status_detail")
        )
        sandbox.notify(payment["id"], "payment.created", mode, copies)
        return jsonify(payment), 201

    @app.post("/_sandbox/payments/<int:payment_id>/status")
    def control_status(payment_id: int) -> Response:
        data = body()
        mode, copies = webhook_args(data)
        payment = sandbox.set_status(payment_id, str(data.get("status")), data.get("status_detail"))
        sandbox.notify(payment_id, "payment.updated", mode, copies)
        return jsonify(payment)

    @app.post("/_sandbox/payments/<int:payment_id>/refund")
    def control_refund(payment_id: int) -> Response:
        data = body()
        mode, copies = webhook_args(data)
        sandbox.refund(payment_id, data.get("amount"), None)
        sandbox.notify(payment_id, "payment.updated", mode, copies)
        return jsonify(sandbox.payment(payment_id))

    @app.post("/_sandbox/payments/<int:payment_id>/chargeback")
    def control_chargeback(payment_id: int) -> Response:
        data = body()
        mode, copies = webhook_args(data)
        payment = sandbox.chargeback(payment_id)
        sandbox.notify(payment_id, "payment.updated", mode, copies)
        return jsonify(payment)

    @app.post("/_sandbox/payments/<int:payment_id>/notify")
    def control_notify(payment_id: int) -> Response:
        data = body()
        ts = data.get("ts")
        entry = sandbox.resend(payment_id, data.get("request_id"), None if ts is None else str(ts))
        return jsonify(entry)

    @app.get("/_sandbox/webhooks")
    def control_webhooks() -> Response:
        return jsonify(sandbox.delivery_log(request.args.get("payment_id")))

    @app.post("/_sandbox/chaos")
    def control_chaos() -> Response:
        return jsonify(sandbox.set_chaos(body()))

    @app.post("/_sandbox/reset")
    def control_reset() -> Response:
        sandbox.reset()
        return jsonify({"status": "reset"})

    @app.get("/_sandbox/health")
    def control_health() -> Response:
        return jsonify({"status": "ok"})

    return app


def _page(title: str, content: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>{content}</body></html>"
    )


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


def main(argv: list[str] | None = None) -> None:
    """Run the sandbox until interrupted, configured from the environment."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8090")))
    args = parser.parse_args(argv)
    app = create_app(
        access_token=os.environ.get("MERCADOPAGO_ACCESS_TOKEN", "TEST-sandbox-token"),
        webhook_secret=os.environ.get("MERCADOPAGO_WEBHOOK_SECRET", "sandbox-webhook-secret"),
        webhook_url=os.environ.get("SANDBOX_WEBHOOK_URL") or None,
        public_url=os.environ.get("SANDBOX_PUBLIC_URL") or f"http://127.0.0.1:{args.port}",
        # A restarted sandbox must not hand out ids a development database already holds.
        id_offset=int(time.time()) % 100_000_000 * 10,
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
