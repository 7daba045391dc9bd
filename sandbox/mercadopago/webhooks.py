"""Notifications as MercadoPago sends them: signed webhooks, legacy IPN copies, retries.

A webhook goes to `<url>?data.id=<id>&type=<topic>` with a JSON body and the headers
`x-request-id` and `x-signature: ts=<ms>,v1=<hmac>` (manifest `id:<data.id>;request-id:…;
ts:…;`). An IPN goes to `<url>?id=<id>&topic=<topic>` with `{"resource", "topic"}`, signed
with no `id:` part (its query has no data.id). Only 200 and 201 count as received; anything
else is retried after each of `retry_delays`, with the first attempt's `ts` and
`x-request-id` (MercadoPago does not sign a retry again).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import requests

from sandbox.mercadopago.common import Clock, sign, with_query


@dataclass(frozen=True)
class Message:
    """One notification to deliver: where, what, and what the delivery log says of it."""

    url: str  # with its query (data.id & type, or id & topic)
    body: dict[str, Any]
    signed_id: str | None  # the manifest's id part: the query's data.id (None for an IPN)
    form: str  # "webhook" or "ipn"
    topic: str
    resource_id: str  # the payment, order or chargeback the message names
    payment_id: int | None


class Notifier:
    """Sends messages in background threads and keeps a log of every attempt."""

    def __init__(
        self,
        *,
        secret: str,
        retry_delays: tuple[float, ...],
        timeout_s: float,
        collector_id: int,
        id_offset: int,
        clock: Clock,
    ) -> None:
        self.secret, self.retry_delays, self.timeout_s = secret, tuple(retry_delays), timeout_s
        self.collector_id, self.clock = collector_id, clock
        self._lock = threading.Lock()
        self._notification_ids = itertools.count(100_000_000_001 + id_offset)
        self._cancel = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Forget the log and cancel pending retries."""
        with self._lock:
            self._cancel.set()
            self._cancel = threading.Event()
            self.deliveries: deque[dict[str, Any]] = deque(maxlen=5000)
            self._delivery_ids = itertools.count(1)

    def close(self) -> None:
        self._cancel.set()

    # Messages ---------------------------------------------------------------------------------

    def webhook(
        self, url: str, topic: str, action: str, data: dict[str, Any], payment_id: int | None
    ) -> Message:
        """A webhook (`?data.id=&type=`) with a new notification id."""
        body = {
            "action": action,
            "api_version": "v1",
            "data": data,
            "date_created": self.clock.stamp(),
            "id": next(self._notification_ids),
            "live_mode": False,
            "type": topic,
            "user_id": str(self.collector_id),
        }
        data_id = str(data["id"])
        target = with_query(url, [("data.id", data_id), ("type", topic)])
        return Message(target, body, data_id, "webhook", topic, data_id, payment_id)

    def ipn(
        self, url: str, topic: str, resource_id: int, resource: str, payment_id: int | None
    ) -> Message:
        """A legacy IPN (`?id=&topic=`) naming `resource`."""
        target = with_query(url, [("id", resource_id), ("topic", topic)])
        body = {"resource": resource, "topic": topic}
        return Message(target, body, None, "ipn", topic, str(resource_id), payment_id)

    # Delivery ---------------------------------------------------------------------------------

    def send(self, message: Message, copies: int = 1) -> None:
        """Deliver in background with retries; `copies` identical deliveries start together."""
        request_id, ts = str(uuid.uuid4()), str(int(time.time() * 1000))
        with self._lock:
            cancel = self._cancel
        # Copies start together (a barrier) to exercise the receiver's handling of races.
        barrier = threading.Barrier(copies) if copies > 1 else None
        for _ in range(copies):
            threading.Thread(
                target=self._deliver_with_retries,
                args=(message, request_id, ts, cancel, barrier),
                name=f"mp-sandbox-{message.form}-{message.resource_id}",
                daemon=True,
            ).start()

    def deliver_once(self, message: Message, request_id: str | None, ts: str | None) -> dict:
        """One attempt now, with these exact headers when given; returns its log entry."""
        request_id = request_id or str(uuid.uuid4())
        return self._deliver(message, request_id, ts or str(int(time.time() * 1000)), 1, 1)

    def delivery_log(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Every attempt, oldest first; `payment_id`, `form` and `topic` filter it."""
        with self._lock:
            entries = list(self.deliveries)
        return [
            e
            for e in entries
            if all(
                str(e[name]) == filters[name]
                for name in ("payment_id", "form", "topic")
                if name in filters
            )
        ]

    def _deliver_with_retries(
        self,
        message: Message,
        request_id: str,
        ts: str,
        cancel: threading.Event,
        barrier: threading.Barrier | None,
    ) -> None:
        if barrier is not None:
            barrier.wait(timeout=10)
        last = len(self.retry_delays) + 1
        for attempt, delay in enumerate((0.0, *self.retry_delays), start=1):
            if cancel.wait(delay) if delay else cancel.is_set():
                return
            # The same ts and x-request-id on every attempt: a receiver that refuses an old
            # ts refuses every retry too.
            entry = self._deliver(message, request_id, ts, attempt, last)
            if entry["outcome"] == "delivered":
                return

    def _deliver(
        self, message: Message, request_id: str, ts: str, attempt: int, last: int
    ) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "x-request-id": request_id,
            "x-signature": sign(self.secret, message.signed_id, request_id, ts),
        }
        status_code, error = None, None
        try:
            answer = requests.post(
                message.url, data=json.dumps(message.body), headers=headers, timeout=self.timeout_s
            )
            status_code = answer.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        # MercadoPago counts only 200 and 201 as received.
        ok = status_code in (200, 201)
        entry = {
            "url": message.url,
            "form": message.form,
            "topic": message.topic,
            "resource_id": message.resource_id,
            "payment_id": message.payment_id,
            "notification_id": message.body.get("id"),
            "action": message.body.get("action"),
            "attempt": attempt,
            "status_code": status_code,
            "error": error,
            "outcome": "delivered" if ok else "retrying" if attempt < last else "gave_up",
            "request_id": request_id,
            "ts": ts,
            "headers": headers,
            "body": message.body,
            "at": self.clock.stamp(),
        }
        with self._lock:
            entry["id"] = next(self._delivery_ids)
            self.deliveries.append(entry)
        return entry
