"""Behaviours of MercadoPago a test selects through `POST /_sandbox/settings`."""

from __future__ import annotations

from typing import Any

from sandbox.mercadopago.common import ApiError

REFUND_STATUSES = ("approved", "in_process")


def defaults(*, require_https: bool = False) -> dict[str, Any]:
    """The settings of a fresh (or reset) sandbox."""
    return {
        # False plays TEST- credentials: MercadoPago sends them no notification at all.
        "notify": True,
        # True plays production: a notification_url must be https.
        "require_https": require_https,
        # The status a refund created through the REST API answers with.
        "refund_status": "approved",
        # Seconds added to the real time (expiry checks and dates) to play a later day.
        "clock_offset_s": 0,
    }


def merged(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`current` with `update` applied, or a 400 naming what is wrong (nothing changes)."""
    unknown = sorted(set(update) - set(current))
    if unknown:
        raise ApiError(400, f"unknown settings: {', '.join(unknown)}")
    for name in ("notify", "require_https"):
        if name in update and not isinstance(update[name], bool):
            raise ApiError(400, f"{name} must be true or false")
    if "refund_status" in update and update["refund_status"] not in REFUND_STATUSES:
        raise ApiError(400, f"refund_status must be one of {', '.join(REFUND_STATUSES)}")
    offset = update.get("clock_offset_s", 0)
    if isinstance(offset, bool) or not isinstance(offset, int | float):
        raise ApiError(400, "clock_offset_s must be a number of seconds")
    return current | update
