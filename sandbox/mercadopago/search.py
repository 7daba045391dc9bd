"""`GET /v1/payments/search`: filters, a date range, sorting and paging as MercadoPago's."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.mercadopago.common import ApiError, parse_datetime
from sandbox.mercadopago.state import Store

DATE_FIELDS = ("date_created", "date_last_updated", "date_approved")
FILTERS = ("external_reference", "status")
MAX_LIMIT = 1000


def search_payments(store: Store, args: dict[str, str]) -> dict[str, Any]:
    """One page of the payments matching `args`, with `paging` (total, limit, offset)."""
    try:
        limit, offset = int(args.get("limit", 30)), int(args.get("offset", 0))
    except ValueError as exc:
        raise ApiError(400, "limit and offset must be integers") from exc
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ApiError(400, f"limit must be within 1..{MAX_LIMIT} and offset at least 0")
    sort = args.get("sort", "date_created")
    if sort not in (*DATE_FIELDS, "id"):
        raise ApiError(400, f"sort must be one of {', '.join(DATE_FIELDS)}")
    criteria = args.get("criteria", "asc")
    if criteria not in ("asc", "desc"):
        raise ApiError(400, "criteria must be asc or desc")
    in_range = _range(args)
    with store.lock:
        found = [
            p
            for p in store.payments.values()
            if all(str(p.get(field)) == args[field] for field in FILTERS if field in args)
            and in_range(p)
        ]
        found.sort(key=lambda p: (_sort_key(p, sort), p["id"]), reverse=criteria == "desc")
        page = copy.deepcopy(found[offset : offset + limit])
    return {"paging": {"total": len(found), "limit": limit, "offset": offset}, "results": page}


def _range(args: dict[str, str]) -> Any:
    """A predicate for `range=<date field>&begin_date=&end_date=` (both bounds included)."""
    field = args.get("range")
    if field is None:
        if "begin_date" in args or "end_date" in args:
            raise ApiError(400, "begin_date and end_date need range=<date field>")
        return lambda payment: True
    if field not in DATE_FIELDS:
        raise ApiError(400, f"range must be one of {', '.join(DATE_FIELDS)}")
    begin = parse_datetime(args["begin_date"], "begin_date") if "begin_date" in args else None
    end = parse_datetime(args["end_date"], "end_date") if "end_date" in args else None

    def within(payment: dict[str, Any]) -> bool:
        if not payment.get(field):
            return False
        when = parse_datetime(payment[field], field)
        return (begin is None or begin <= when) and (end is None or when <= end)

    return within


def _sort_key(payment: dict[str, Any], sort: str) -> Any:
    if sort == "id":
        return payment["id"]
    value = payment.get(sort)
    # Payments without the date (e.g. never approved) sort first, as nulls do.
    return parse_datetime(value, sort).timestamp() if value else float("-inf")
