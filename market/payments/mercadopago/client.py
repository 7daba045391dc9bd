"""MercadoPago through its official SDK: one method per provider call, errors as market errors.

The SDK itself (sdk.py) is imported when the first gateway is built, not with this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from market.errors import ProviderError, ProviderTransientError

if TYPE_CHECKING:
    from mercadopago.config import RequestOptions

DEFAULT_API_BASE_URL = "https://api.mercadopago.com"
PING_TIMEOUT_S = 2.0
SEARCH_LIMIT = 100
# MercadoPago's largest page of a payment search.
SEARCH_PAGE = 1000


class MercadoPagoGateway:
    """MercadoPago's REST API for this project; raises ProviderError/ProviderTransientError."""

    def __init__(
        self,
        access_token: str,
        api_base_url: str = DEFAULT_API_BASE_URL,
        timeout: float = 10,
    ) -> None:
        # The SDK (and requests) load here, with the first gateway: a web process that never
        # calls MercadoPago never imports them (sdk.py holds the pooled transport).
        from market.payments.mercadopago import sdk

        self._token = access_token
        self._timeout = float(timeout)
        self._sdk = sdk.build_sdk(
            access_token,
            base_url=api_base_url,
            connect_timeout=min(3.0, self._timeout),
            read_timeout=self._timeout,
            options=self._options(),
        )
        ping_timeout = min(PING_TIMEOUT_S, self._timeout)
        self._ping_sdk = sdk.build_sdk(
            access_token,
            base_url=api_base_url,
            connect_timeout=ping_timeout,
            read_timeout=ping_timeout,
            options=self._options(),
        )

    def create_preference(self, body: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """Create a Checkout Pro preference; idempotent per `idempotency_key`."""
        payload = _json_numbers(dict(body))
        options = self._options(idempotency_key)

        def create() -> Mapping[str, Any]:
            return self._sdk.preference().create(payload, options)

        if "notification_url" not in payload:
            return self._call(create)
        # SDK 3.6 warns on every notification_url; we send one on purpose (only when
        # MERCADOPAGO_WEBHOOK_URL is set). catch_warnings is process-wide and not thread safe
        # on 3.11: a race can at worst leave this same narrow filter installed.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="notification_url is deprecated", category=DeprecationWarning
            )
            return self._call(create)

    def get_preference(self, preference_id: str) -> dict[str, Any]:
        """Fetch a preference by id."""
        return self._call(lambda: self._sdk.preference().get(preference_id))

    def get_payment(self, payment_id: int | str) -> dict[str, Any]:
        """Fetch a payment by id: the truth a notification only hints at."""
        return self._call(lambda: self._sdk.payment().get(payment_id))

    def search_payments(self, *, external_reference: str) -> list[dict[str, Any]]:
        """Payments carrying `external_reference`, newest first."""
        filters = {
            "external_reference": external_reference,
            "sort": "date_created",
            "criteria": "desc",
            # One purchase has a handful of attempts; one page is all of them.
            "limit": SEARCH_LIMIT,
        }
        found = self._call(lambda: self._sdk.payment().search(filters))
        return list(found.get("results") or [])

    def search_updated_payments(
        self, *, begin: datetime, end: datetime, offset: int = 0, limit: int = SEARCH_PAGE
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the payments changed in [begin, end], oldest change first, and how
        many there are in all (reconciliation reads every page of one window)."""
        filters = {
            "range": "date_last_updated",
            "begin_date": begin.isoformat(timespec="milliseconds"),
            "end_date": end.isoformat(timespec="milliseconds"),
            "sort": "date_last_updated",
            "criteria": "asc",
            "offset": offset,
            "limit": limit,
        }
        found = self._call(lambda: self._sdk.payment().search(filters))
        paging = found.get("paging") or {}
        results = list(found.get("results") or [])
        return results, int(paging.get("total", offset + len(results)))

    def get_chargeback(self, chargeback_id: int | str) -> dict[str, Any]:
        """Fetch a chargeback; its `payments` name the payments it disputes."""
        return self._call(lambda: self._sdk.chargeback().get(chargeback_id))

    def refund_payment(
        self, payment_id: int | str, *, amount: Decimal | None, idempotency_key: str
    ) -> dict[str, Any]:
        """Refund a payment in full (`amount=None`) or in part; idempotent per `idempotency_key`."""
        # MercadoPago reads an empty body as "refund the rest".
        body = None if amount is None else {"amount": _json_numbers(amount)}
        options = self._options(idempotency_key)
        return self._call(lambda: self._sdk.refund().create(payment_id, body, options))

    def get_merchant_order(self, merchant_order_id: int | str) -> dict[str, Any]:
        """Fetch a merchant order with its payments."""
        return self._call(lambda: self._sdk.merchant_order().get(merchant_order_id))

    def ping(self) -> bool:
        """Whether the API answers and accepts our token, within a short timeout."""
        from market.payments.mercadopago.sdk import MercadoPagoError, TransportError

        try:
            result = self._ping_sdk.user().get()
        except (TransportError, MercadoPagoError):
            return False
        return result["status"] == 200

    def _options(self, idempotency_key: str | None = None) -> RequestOptions:
        # Without one the SDK sends a random key per call; it rejects "" and keys over 64 chars.
        from market.payments.mercadopago.sdk import RequestOptions

        headers = None if idempotency_key is None else {"x-idempotency-key": idempotency_key}
        return RequestOptions(
            access_token=self._token,
            connection_timeout=self._timeout,
            custom_headers=headers,
            # Tasks own retries (with backoff and a bound). SDK retries would multiply the
            # timeout and turn a 5xx into a bare RetryError without the provider's message.
            max_retries=0,
            retry_on=[],
        )

    def _call(self, call: Callable[[], Mapping[str, Any]]) -> Any:
        from market.payments.mercadopago.sdk import MercadoPagoError, TransportError

        try:
            result = call()
        except TransportError as exc:  # timeouts, refused or dropped connections
            raise ProviderTransientError(f"MercadoPago unreachable: {exc}") from exc
        except MercadoPagoError as exc:  # a body that is not JSON (a proxy's page)
            status = exc.status_code
            if status == 429 or status >= 500 or status < 400:
                raise ProviderTransientError(exc.message, provider_status=status) from exc
            raise ProviderError(exc.message, status_code=status, provider_status=status) from exc
        status, body = result["status"], result["response"]
        if 200 <= status < 300:
            return body
        message = _message(body, status)
        if status == 429 or status >= 500:
            raise ProviderTransientError(message, provider_status=status)
        raise ProviderError(message, status_code=status, provider_status=status)


def _message(body: Any, status: int) -> str:
    text = (body.get("message") or body.get("error")) if isinstance(body, dict) else None
    return str(text) if text else f"MercadoPago answered {status}"


def _json_numbers(value: Any) -> Any:
    """`value` with every Decimal turned into a JSON number (the SDK's encoder rejects Decimal)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_numbers(item) for item in value]
    return value
