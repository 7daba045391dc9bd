"""The sandbox as one object: each action changes the store, then notifies as MercadoPago
would (which forms, to which URL, unless the settings or the caller say not to)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.mercadopago import chargebacks, refunds, search, settings
from sandbox.mercadopago.chaos import Chaos
from sandbox.mercadopago.common import ApiError, Clock
from sandbox.mercadopago.state import Store
from sandbox.mercadopago.webhooks import Message, Notifier

WEBHOOK_MODES = ("send", "withhold", "duplicate")


class Sandbox:
    """State, notifications, chaos and settings; every method is thread safe."""

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
        require_https: bool = False,
    ) -> None:
        self.access_token, self.webhook_url, self.public_url = access_token, webhook_url, public_url
        self.collector_id = collector_id
        self.clock = Clock()
        self.store = Store(collector_id=collector_id, id_offset=id_offset, clock=self.clock)
        self.notifier = Notifier(
            secret=webhook_secret,
            retry_delays=retry_delays,
            timeout_s=webhook_timeout_s,
            collector_id=collector_id,
            id_offset=id_offset,
            clock=self.clock,
        )
        self.chaos = Chaos()
        self._defaults = settings.defaults(require_https=require_https)
        self._lock = threading.Lock()
        # API calls answered per "METHOD /route" since start (never reset: tests read deltas).
        self.calls: Counter[str] = Counter()
        self.reset()

    def count_call(self, route: str) -> None:
        with self._lock:
            self.calls[route] += 1

    def call_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)

    def reset(self) -> None:
        """Forget everything, restore the settings, turn chaos off, cancel webhook retries."""
        with self._lock:
            self.store.reset()
            self.notifier.reset()
            self.chaos.reset()
            self.settings = dict(self._defaults)
            self.clock.offset_s = 0.0
            self._last: dict[int, Message] = {}  # per payment: its last webhook, for resend
            self._order_ipn_sent: set[int] = set()  # payments whose merchant_order IPN went

    @property
    def preferences(self) -> dict[str, dict[str, Any]]:
        """The stored preferences (for tests that look inside; do not mutate)."""
        return self.store.preferences

    @property
    def payments(self) -> dict[int, dict[str, Any]]:
        """The stored payments (for tests that look inside; do not mutate)."""
        return self.store.payments

    def close(self) -> None:
        """Stop webhook retries and wake chaos sleepers (on shutdown)."""
        self.notifier.close()
        self.chaos.close()

    def configure(self, update: dict[str, Any]) -> dict[str, Any]:
        """Apply settings (all checked first); returns them all."""
        with self._lock:
            self.settings = settings.merged(self.settings, update)
            self.clock.offset_s = float(self.settings["clock_offset_s"])
            return dict(self.settings)

    # REST API ---------------------------------------------------------------------------------

    def create_preference(self, body: Any, key: str | None, base_url: str) -> dict[str, Any]:
        api_base = self.public_url or base_url.rstrip("/")
        return self.store.create_preference(
            body, key, api_base, require_https=self.settings["require_https"]
        )

    def preference(self, pref_id: str) -> dict[str, Any]:
        return self.store.preference(pref_id)

    def payment(self, payment_id: int) -> dict[str, Any]:
        return self.store.payment(payment_id)

    def search_payments(self, args: dict[str, str]) -> dict[str, Any]:
        return search.search_payments(self.store, args)

    def merchant_order(self, order_id: int) -> dict[str, Any]:
        return self.store.merchant_order(order_id)

    def chargeback(self, chargeback_id: str) -> dict[str, Any]:
        return chargebacks.chargeback(self.store, chargeback_id)

    def search_chargebacks(self, payment_id: str | None) -> dict[str, Any]:
        found = chargebacks.search(self.store, payment_id)
        return {"paging": {"total": len(found), "limit": 30, "offset": 0}, "results": found}

    def refund(self, payment_id: int, amount: Any, key: str | None) -> dict[str, Any]:
        """A refund through the REST API, answering with the status the settings choose."""
        refund, created = refunds.create_refund(
            self.store, payment_id, amount, key, self.settings["refund_status"]
        )
        if created and refund["status"] == "approved":
            self.notify(payment_id, "payment.updated")
        return refund

    # Actions of the checkout page and the control API -----------------------------------------

    def pay(
        self,
        pref_id: str,
        status: str,
        status_detail: str | None = None,
        payment_type: str = "credit_card",
        mode: str = "send",
        copies: int = 1,
    ) -> dict[str, Any]:
        payment = self.store.pay(pref_id, status, status_detail, payment_type)
        self.notify(payment["id"], "payment.created", mode, copies)
        return payment

    def set_status(
        self, payment_id: int, status: str, detail: str | None, mode: str, copies: int
    ) -> dict[str, Any]:
        payment = self.store.set_status(payment_id, status, detail)
        self.notify(payment_id, "payment.updated", mode, copies)
        return payment

    def panel_refund(
        self, payment_id: int, amount: Any, refund_status: str, mode: str, copies: int
    ) -> dict[str, Any]:
        """A refund made in MercadoPago's panel: notified only by webhook, when approved."""
        refund, _ = refunds.create_refund(self.store, payment_id, amount, None, refund_status)
        if refund["status"] == "approved":
            self.notify(payment_id, "payment.updated", mode, copies)
        return self.payment(payment_id)

    def settle_refund(self, refund_id: int, status: str, mode: str, copies: int) -> dict[str, Any]:
        """Move an in_process refund to approved or rejected; the payment's refunds changed."""
        refund = refunds.set_refund_status(self.store, refund_id, status)
        self.notify(refund["payment_id"], "payment.updated", mode, copies)
        return refund

    def charge_back(
        self, payment_id: int, detail: str, mode: str, copies: int, payment_update: bool
    ) -> dict[str, Any]:
        """Open or move the payment's chargeback; notify the chargeback topic and, unless
        `payment_update` is False, the payment's own change too."""
        found, action = chargebacks.charge_back(self.store, payment_id, detail)
        url, forms = self._route(payment_id)
        data = {"id": found["id"], "payment_id": payment_id}
        message = self.notifier.webhook(url or "", "topic_chargebacks_wh", action, data, payment_id)
        if url and "webhook" in forms and self._sends(mode):
            self.notifier.send(message, copies if mode == "duplicate" else 1)
        if payment_update:
            self.notify(payment_id, "payment.updated", mode, copies)
        return found

    # Notifications ----------------------------------------------------------------------------

    def notify(self, payment_id: int, action: str, mode: str = "send", copies: int = 1) -> None:
        """Notify a change of the payment: its webhook, and its IPN copies where due."""
        url, forms = self._route(payment_id)
        webhook = self.notifier.webhook(
            url or "", "payment", action, {"id": str(payment_id)}, payment_id
        )
        with self._lock:
            self._last[payment_id] = webhook
        if url is None or not self._sends(mode):
            return
        if "webhook" in forms:
            self.notifier.send(webhook, copies if mode == "duplicate" else 1)
        if "ipn" in forms:
            api_base, order_id = self._api_base(payment_id)
            resource = f"{api_base}/v1/payments/{payment_id}"
            self.notifier.send(self.notifier.ipn(url, "payment", payment_id, resource, payment_id))
            with self._lock:
                first = payment_id not in self._order_ipn_sent
                self._order_ipn_sent.add(payment_id)
            if first:
                resource = f"{api_base}/merchant_orders/{order_id}"
                ipn = self.notifier.ipn(url, "merchant_order", order_id, resource, payment_id)
                self.notifier.send(ipn)

    def resend(self, payment_id: int, request_id: str | None, ts: str | None) -> dict[str, Any]:
        """Deliver the payment's last webhook once, now (whatever the settings say)."""
        self.payment(payment_id)
        url, _ = self._route(payment_id)
        if url is None:
            raise ApiError(409, "no notification_url and no SANDBOX_WEBHOOK_URL", "conflict")
        with self._lock:
            last = self._last.get(payment_id)
        if last is None:
            self.notify(payment_id, "payment.updated", mode="withhold")
            with self._lock:
                last = self._last[payment_id]
        return self.notifier.deliver_once(last, request_id, ts)

    def delivery_log(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return self.notifier.delivery_log(filters)

    def _sends(self, mode: str) -> bool:
        # TEST- credentials: MercadoPago notifies nothing; only a search finds the change.
        return mode != "withhold" and bool(self.settings["notify"])

    def _route(self, payment_id: int) -> tuple[str | None, tuple[str, ...]]:
        """Where the payment's notifications go and in which forms. A preference's
        notification_url gets webhooks and IPN copies unless its `source_news` says one
        (webhooks or ipn); the panel's webhook URL gets webhooks only."""
        with self.store.lock:
            pref_id = self.store.stored_payment(payment_id)["additional_info"]["preference_id"]
            url = self.store.preferences[pref_id].get("notification_url")
        if not url:
            return self.webhook_url, ("webhook",)
        news = parse_qs(urlsplit(url).query).get("source_news", [])
        if "webhooks" in news:
            return url, ("webhook",)
        if "ipn" in news:
            return url, ("ipn",)
        return url, ("webhook", "ipn")

    def _api_base(self, payment_id: int) -> tuple[str, int]:
        with self.store.lock:
            payment = self.store.stored_payment(payment_id)
            pref_id = payment["additional_info"]["preference_id"]
            return self.store.api_base[pref_id], payment["order"]["id"]


def webhook_args(data: dict[str, Any]) -> tuple[str, int]:
    """The webhook mode and copies asked for, checked before anything changes."""
    mode, copies = data.get("webhook", "send"), data.get("copies", 2)
    if mode not in WEBHOOK_MODES:
        raise ApiError(400, "webhook must be send, withhold or duplicate")
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 20:
        raise ApiError(400, "copies must be an integer within 1..20")
    return mode, copies
