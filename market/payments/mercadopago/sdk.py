"""The MercadoPago SDK and its HTTP transport: the only module that imports the SDK (and
`requests`), loaded when the first gateway is built, never by the web app factory.

The SDK's own `HttpClient` opens a new `requests.Session` (a new connection, a new TLS
handshake) for every call. `PooledHttpClient` sends the same requests through one session per
process and thread instead, so calls reuse their keep-alive connections; a forked child
builds its own (the parent's sockets are not its to use). It keeps what the SDK's transport
does (the retry adapter mounted for https only, the response normalised to
`{"status", "response"}`, a body that is not JSON raised as MPServerError) and adds ours: the
API address routed to a configured base URL, and separate connect and read timeouts.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import mercadopago
import requests
from mercadopago.config import RequestOptions
from mercadopago.config.defaults import DEFAULT_RETRY_ON
from mercadopago.errors.exceptions import MPServerError
from mercadopago.http import HttpClient
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

__all__ = [
    "MercadoPagoError",
    "PooledHttpClient",
    "RequestOptions",
    "TransportError",
    "build_sdk",
    "session_for",
]

DEFAULT_API_BASE_URL = "https://api.mercadopago.com"

MercadoPagoError = mercadopago.MercadoPagoError
# Timeouts, refused or dropped connections.
TransportError = requests.RequestException

_local = threading.local()


def session_for(
    maxretries: int | None, retry_on: list[int] | None, backoff_factor: float | None
) -> requests.Session:
    """This process's and thread's session for these retry settings (one in practice: the
    gateway always sends the same), built on first use and after a fork."""
    pid = os.getpid()
    if getattr(_local, "pid", None) != pid:
        _local.pid, _local.sessions = pid, {}
    key = (maxretries, tuple(retry_on) if retry_on is not None else None, backoff_factor)
    session: requests.Session | None = _local.sessions.get(key)
    if session is None:
        session = requests.Session()
        # As the SDK mounts it: retries (by its options) for https, requests' default for http.
        retries = Retry(
            total=maxretries,
            status_forcelist=retry_on if retry_on is not None else DEFAULT_RETRY_ON,
            backoff_factor=backoff_factor if backoff_factor is not None else 0,
        )
        session.mount("https://", HTTPAdapter(max_retries=retries))
        _local.sessions[key] = session
    return session


class PooledHttpClient(HttpClient):
    """The SDK's transport over this process's pooled session, sent to `base_url` instead of
    api.mercadopago.com, with (connect, read) timeouts."""

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)

    def request(
        self,
        method: str,
        url: str,
        maxretries: int | None = None,
        retry_on: list[int] | None = None,
        backoff_factor: float | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Send the SDK's request; the answer as the SDK's `HttpClient.request` gives it."""
        # The SDK hard-codes its API address in `Config`; this hook is its supported way round.
        if url.startswith(DEFAULT_API_BASE_URL):
            url = self.base_url + url[len(DEFAULT_API_BASE_URL) :]
        # The SDK passes one float for both; a dead host should fail faster than a slow answer.
        kwargs["timeout"] = self.timeout
        session = session_for(maxretries, retry_on, backoff_factor)
        answer = session.request(method, url, **kwargs)
        response: dict[str, Any] = {"status": answer.status_code, "response": None}
        if answer.status_code != 204 and answer.content:
            try:
                response["response"] = answer.json()
            except ValueError as exc:
                raise MPServerError(
                    answer.status_code,
                    {"message": "Invalid JSON in response body", "error": "invalid_response"},
                ) from exc
        return response


def build_sdk(
    access_token: str,
    *,
    base_url: str,
    connect_timeout: float,
    read_timeout: float,
    options: RequestOptions,
) -> mercadopago.SDK:
    """An SDK object over the pooled transport."""
    client = PooledHttpClient(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout)
    return mercadopago.SDK(access_token, http_client=client, request_options=options)
