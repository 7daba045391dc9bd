"""Fixtures of the sandbox's tests: sandboxes on free ports, the gateway, a receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from market.payments.mercadopago.client import MercadoPagoGateway
from sandbox.mercadopago import create_app, serve_in_thread
from tests.sandbox.helpers import DELAYS, SECRET, TOKEN, Receiver, Sandbox


@pytest.fixture()
def start_sandbox() -> Iterator[Callable[..., Sandbox]]:
    servers = []

    def start(**options: Any) -> Sandbox:
        options = {"webhook_retry_delays": DELAYS, **options}
        server, url = serve_in_thread(
            create_app(access_token=TOKEN, webhook_secret=SECRET, **options)
        )
        servers.append(server)
        return Sandbox(url)

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture()
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return start_sandbox()


@pytest.fixture()
def gateway(sandbox: Sandbox) -> MercadoPagoGateway:
    return MercadoPagoGateway(TOKEN, api_base_url=sandbox.url, timeout=5)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()
