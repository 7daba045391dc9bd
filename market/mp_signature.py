"""Verification of MercadoPago webhook signatures (`x-signature` and `x-request-id` headers)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

# MercadoPago lower-cases data.id in the manifest only when it is purely alphanumeric.
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9]+")
# A 12-digit timestamp is in milliseconds: 1e11 seconds would be the year 5138.
_MS_THRESHOLD = 10**11


class InvalidSignatureError(Exception):
    """The notification is unsigned, badly signed or stale; `reason` says which."""

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
    tolerance_s: int = 300,
) -> None:
    """Return if the headers sign the notification with `secret`, fresh within `tolerance_s`."""
    if not secret:
        # An empty key would make every forged signature computable: fail closed.
        raise InvalidSignatureError("no webhook secret configured")
    ts, signatures = _parse_header(x_signature)
    manifest = "".join(
        f"{name}:{value};"
        for name, value in (
            ("id", _normalise_data_id(data_id)),
            ("request-id", (x_request_id or "").strip()),
            ("ts", ts),
        )
        # The documented rule: a part whose value the notification lacks is left out.
        if value
    )
    expected = hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise InvalidSignatureError("signature mismatch")
    signed_at = int(ts) / 1000 if int(ts) >= _MS_THRESHOLD else int(ts)
    current = time.time() if now is None else now
    if abs(current - signed_at) > tolerance_s:
        raise InvalidSignatureError("timestamp outside tolerance")


def _parse_header(header: str | None) -> tuple[str, list[str]]:
    if not header or not header.strip():
        raise InvalidSignatureError("missing x-signature header")
    ts: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            continue
        if key == "ts":
            ts = value
        elif key == "v1":
            signatures.append(value.lower())
    if ts is None:
        raise InvalidSignatureError("x-signature has no ts")
    if not ts.isascii() or not ts.isdigit():
        raise InvalidSignatureError("x-signature ts is not a number")
    if not signatures:
        raise InvalidSignatureError("x-signature has no v1")
    return ts, signatures


def _normalise_data_id(data_id: str | None) -> str:
    value = (data_id or "").strip()
    return value.lower() if _ALPHANUMERIC.fullmatch(value) else value
