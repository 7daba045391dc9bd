"""Verification of MercadoPago notification signatures (`x-signature`, `x-request-id`), by
the SDK's own `WebhookSignatureValidator` (mercadopago 3.6).

Its manifest is `id:<data.id>;request-id:<x-request-id>;ts:<ts>;` with `data.id` taken from
the query string as received (original case: MercadoPago signs it so) and each absent part
left out. We call it without a tolerance: a notification only asks us to fetch the payment
from MercadoPago, and MercadoPago's retries (15 min, 30 min, 6 h, 48 h, then every 96 h) may
keep the first attempt's `ts`, so a correctly signed notification is accepted however old,
its lateness returned for the logs and metrics. A `ts` far in the future is refused: no
retry explains it. `ts` may be in seconds or milliseconds.
"""

from __future__ import annotations

import time

# A 12-digit timestamp is in milliseconds: 1e11 seconds would be the year 5138.
_MS_THRESHOLD = 10**11
# Clocks drift; a signature from further ahead than this is not MercadoPago's.
FUTURE_TOLERANCE_S = 300


class InvalidSignatureError(Exception):
    """The notification is unsigned or badly signed; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_notification(
    *,
    x_signature: str | None,
    x_request_id: str | None,
    data_id: str | None,
    secret: str,
    now: float | None = None,
) -> float:
    """Return the notification's lateness in seconds if the headers sign it with `secret`;
    raise InvalidSignatureError otherwise."""
    if not secret:
        # An empty key would make every forged signature computable: fail closed.
        raise InvalidSignatureError("no webhook secret configured")
    # Imported here, not with the module: the web app factory does not load the SDK, the
    # first webhook does (once per process).
    from mercadopago.webhook.validator import (
        InvalidWebhookSignatureError,
        WebhookSignatureValidator,
    )

    # Hex digests are case-insensitive; the SDK compares them as sent.
    header = x_signature.lower() if x_signature else x_signature
    try:
        WebhookSignatureValidator.validate(header, x_request_id, data_id, secret)
    except InvalidWebhookSignatureError as exc:
        raise InvalidSignatureError(exc.reason.value) from exc
    ts = signed_ts(header or "")
    if ts is None:  # digits the SDK accepts but that are no number (e.g. "²")
        raise InvalidSignatureError("MalformedSignatureHeader")
    signed_at = ts / 1000 if ts >= _MS_THRESHOLD else float(ts)
    lateness = (time.time() if now is None else now) - signed_at
    if lateness < -FUTURE_TOLERANCE_S:
        raise InvalidSignatureError("TimestampInTheFuture")
    return max(lateness, 0.0)


def signed_ts(header: str) -> int | None:
    """The `ts` of an x-signature header (the last one, as the SDK reads it), if a number."""
    found = None
    for part in header.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "ts" and value.strip():
            found = value.strip()
    return int(found) if found and found.isascii() and found.isdigit() else None
