"""The MercadoPago sandbox for tests, with the app served on a real port for its webhooks.

`mp_sandbox` (session): starts `sandbox.mercadopago` and the test app under werkzeug, then
points the worker's settings (read from the environment, cached) at them. Helpers buy and
pay through the real API, the real worker and the sandbox's control API.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.serving import make_server

from market.config import Settings
from market.models import Purchase
from market.models.base import utcnow
from sandbox.mercadopago import create_app, serve_in_thread
from tests.support.environment import worker_environment
from tests.support.poll import wait_for

WEBHOOK_PATH = "/api/v1/advanced/webhooks/mercadopago"
BUY = "/api/v1/advanced/credits/buy"
ME = "/api/v1/advanced/credits/me"


@dataclass
class MercadoPagoSandbox:
    """The running sandbox and where the app listens."""

    url: str
    app_url: str

    def control(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(f"{self.url}/_sandbox{path}", json=body or {}, timeout=10)

    def pay(self, preference_id: str, status: str = "approved", **options: Any) -> dict[str, Any]:
        """Pay the preference (webhook "send" by default); returns the payment."""
        answer = self.control(f"/preferences/{preference_id}/pay", {"status": status, **options})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def payment(self, payment_id: int) -> dict[str, Any]:
        return self.app.extensions["mercadopago_sandbox"].payment(payment_id)

    def webhooks(self, payment_id: int, form: str | None = "webhook") -> list[dict[str, Any]]:
        """The delivery log of the payment's notifications: webhooks only by default (the
        sandbox also sends IPN copies, `form="ipn"`, unless notification_url has
        source_news=webhooks); `form=None` gives every form."""
        params: dict[str, Any] = {"payment_id": payment_id}
        if form is not None:
            params["form"] = form
        return requests.get(f"{self.url}/_sandbox/webhooks", params=params, timeout=10).json()

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Select sandbox behaviours (notify, require_https, refund_status, clock_offset_s);
        with no argument, read them. `control("/reset")` restores the defaults."""
        if not changes:
            return requests.get(f"{self.url}/_sandbox/settings", timeout=10).json()
        answer = self.control("/settings", changes)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def calls(self, route: str) -> int:
        """How many times the sandbox answered `route` ("GET /users/me") since it started."""
        answer = requests.get(f"{self.url}/_sandbox/calls", timeout=10)
        return int(answer.json().get(route, 0))

    def chaos(self, **config: Any) -> None:
        assert self.control("/chaos", config).status_code == 200

    app: Flask | None = None


def _serve(app: Flask) -> tuple[Any, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(
        target=lambda: server.serve_forever(poll_interval=0.05), name="app-under-test", daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def mp_sandbox(app: Flask, settings: Settings) -> Iterator[MercadoPagoSandbox]:
    """The sandbox, the app on a real port, and the worker's settings pointing at both."""

    sandbox_app = create_app(
        access_token=settings.mercadopago_access_token,
        webhook_secret=settings.mercadopago_webhook_secret,
        webhook_retry_delays=(0.5, 1.0, 2.0),
    )
    sandbox_server, sandbox_url = serve_in_thread(sandbox_app)
    app_server, app_url = _serve(app)
    changes = {
        "MERCADOPAGO_API_BASE_URL": sandbox_url,
        "MERCADOPAGO_WEBHOOK_URL": app_url + WEBHOOK_PATH,
    }
    # Workers read `runtime.settings()` (cached): rebuild it with the sandbox's address.
    try:
        with worker_environment(changes):
            yield MercadoPagoSandbox(sandbox_url, app_url, app=sandbox_app)
    finally:
        app_server.shutdown()
        sandbox_server.shutdown()


def finished_job(client: FlaskClient, headers: dict[str, str], status_url: str) -> dict[str, Any]:
    """The job once it is succeeded, failed or cancelled."""

    def probe() -> dict[str, Any] | None:
        body = client.get(status_url, headers=headers).get_json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(probe, timeout=30, what=f"job {status_url}")


def buy(
    client: FlaskClient, headers: dict[str, str], package_id: str = "credits-100"
) -> dict[str, Any]:
    """Buy a package and wait for its preference: the job's result plus purchase_id."""
    answer = client.post(BUY, json={"package_id": package_id}, headers=headers)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    job = finished_job(client, headers, answer.get_json()["status_url"])
    assert job["state"] == "succeeded", job
    return {**job["result"], "purchase_id": answer.get_json()["purchase_id"]}


def balance(client: FlaskClient, headers: dict[str, str]) -> int:
    answer = client.get(ME, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return int(answer.get_json()["balance"])


def wait_balance(client: FlaskClient, headers: dict[str, str], credits: int) -> None:
    """Wait until the API answers a balance of `credits`. A settlement drops the cached
    balance just after its commit, so for a moment after the purchase's new status shows, a
    balance this test read before may still be served (cache-aside); it is never older."""
    try:
        wait_for(lambda: balance(client, headers) == credits, timeout=10, what="the balance")
    except AssertionError:
        assert balance(client, headers) == credits
        raise


def purchase_row(app: Flask, purchase_id: str) -> Purchase:
    with app.extensions["spartan.sessions"]() as session:
        return session.execute(
            select(Purchase).where(Purchase.id == uuid.UUID(purchase_id))
        ).scalar_one()


def wait_status(app: Flask, purchase_id: str, status: str, timeout: float = 20) -> Purchase:
    """The purchase once it reaches `status`."""

    def probe() -> Purchase | None:
        row = purchase_row(app, purchase_id)
        return row if row.status == status else None

    return wait_for(probe, timeout=timeout, what=f"purchase {purchase_id} {status}")


# What the tests' reconciliation runs count as quiet: longer than the suite lives, so the
# pending purchases other tests leave behind (fuzzing alone leaves thousands) are never due.
QUIET_S = 3600


def reconcile(app: Flask, *quiet: str) -> dict[str, Any]:
    """Run the reconciliation sweep as beat does, with the purchases `quiet` (ids) left
    untouched for two hours: the sweep searches those and the payments MercadoPago changed
    since its cursor, not every pending purchase of the suite."""
    from workflows.sweeps import reconcile_purchases  # the worker's side, loaded when used

    if quiet:
        with app.extensions["spartan.sessions"]() as session:
            session.execute(
                update(Purchase)
                .where(Purchase.id.in_([uuid.UUID(p) for p in quiet]))
                .values(updated_at=utcnow() - timedelta(seconds=2 * QUIET_S))
            )
            session.commit()
    return reconcile_purchases(older_than_s=QUIET_S)
