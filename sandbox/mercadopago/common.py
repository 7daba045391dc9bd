"""What every part of the sandbox shares: MercadoPago's constants, its error shape, the
sandbox clock and small conversions."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

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
ARGENTINA = timezone(timedelta(hours=-3))
CENT = Decimal("0.01")


class ApiError(Exception):
    """An error answered in MercadoPago's JSON shape."""

    def __init__(self, status: int, message: str, error: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.message, self.error = status, message, error


class Clock:
    """The sandbox's idea of now: the real time plus an offset a test may set (to play "three
    days later" without waiting)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> datetime:
        return datetime.now(ARGENTINA) + timedelta(seconds=self.offset_s)

    def stamp(self) -> str:
        """Now in MercadoPago's format: milliseconds and the -03:00 offset."""
        return self.now().isoformat(timespec="milliseconds")


def parse_datetime(value: Any, name: str) -> datetime:
    """An ISO 8601 date-time with an offset, or a 400 naming the field."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ApiError(400, f"{name} must be an ISO 8601 date-time with an offset") from exc
    if parsed.tzinfo is None:
        raise ApiError(400, f"{name} must carry a UTC offset (e.g. -03:00)")
    return parsed


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


def total(items: list[dict[str, Any]]) -> Decimal:
    return sum((dec(i["quantity"]) * dec(i["unit_price"]) for i in items), Decimal(0))


def num(value: Decimal) -> int | float:
    """A JSON number as MercadoPago writes amounts (no trailing .0 on whole amounts)."""
    return int(value) if value == value.to_integral_value() else float(value)


def with_query(url: str, params: Iterable[tuple[str, Any]]) -> str:
    """`url` with `params` appended after whatever query it already has."""
    extra = urlencode([(k, "null" if v is None else v) for k, v in params])
    base, _, fragment = url.partition("#")
    joined = f"{base}{'&' if urlsplit(base).query else '?'}{extra}"
    return f"{joined}#{fragment}" if fragment else joined


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def sign(secret: str, data_id: str | None, request_id: str, ts: str) -> str:
    """The `x-signature` header MercadoPago would send for these values. Without a `data_id`
    (an IPN has no data.id in its query) the `id:` part is left out of the manifest."""
    manifest = "".join(
        f"{name}:{value};"
        for name, value in (("id", data_id), ("request-id", request_id), ("ts", ts))
        if value
    )
    digest = hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    return f"ts={ts},v1={digest}"
