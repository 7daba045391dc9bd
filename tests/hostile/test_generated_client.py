"""A Python client generated from /api/openapi.json (openapi-python-client, httpx) buys credits
through the sandbox, follows the task to `succeeded`, reads the balance and the notifications.

The client is generated in the test from the document the app serves, so a document that
cannot produce a working client fails here. It raises on any status the document does not
list (`raise_on_unexpected_status`), and parses every answer into the document's models.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.support.mercadopago import MercadoPagoSandbox
from tests.support.poll import wait_for

PACKAGE = "spartan_client"
CONFIG = f"post_hooks: []\nproject_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\n"


@pytest.fixture(scope="module")
def generated(app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated package, imported from a folder of its own."""
    root = tmp_path_factory.mktemp("client")
    spec = root / "openapi.json"
    spec.write_text(json.dumps(app.test_client().get("/api/openapi.json").get_json()))
    (root / "config.yaml").write_text(CONFIG)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "openapi_python_client", "generate"),
            *("--path", str(spec), "--meta", "none", "--config", str(root / "config.yaml")),
            *("--output-path", str(root / PACKAGE)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The generator reports what of the document it could not turn into code.
    assert "Warning" not in output and "Error" not in output, output
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def operation(name: str) -> Any:
    """A generated operation module, e.g. `credits_.post_credits_buy` (tag, operationId)."""
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def test_a_generated_client_buys_and_follows_its_purchase(
    generated: Any, mp_sandbox: MercadoPagoSandbox, worker: Any, token: Callable[..., str]
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    client = generated.AuthenticatedClient(
        base_url=mp_sandbox.app_url,
        token=token(f"client-{uuid.uuid4().hex[:8]}"),
        raise_on_unexpected_status=True,
    )
    packages = operation("credits_.get_credits_packages").sync(client=client)
    assert {p.id for p in packages} == {m.value for m in models.BuyPackageId}

    buy = operation("credits_.post_credits_buy").sync_detailed(
        client=client,
        body=models.Buy(package_id=models.BuyPackageId("credits-100")),
        idempotency_key=f"client-{uuid.uuid4()}",
    )
    assert buy.status_code == 202, buy.content
    accepted = buy.parsed
    assert isinstance(accepted, models.AcceptedPurchase)
    assert buy.headers["Location"] == accepted.status_url

    get_task = operation("tasks.get_tasks_task_by_id")

    def finished() -> Any:
        job = get_task.sync(uuid.UUID(str(accepted.task_id)), client=client)
        assert isinstance(job, models.Job), job
        return job if job.state.value in ("succeeded", "failed", "cancelled") else None

    job = wait_for(finished, timeout=30, what="the purchase job")
    assert job.state == models.JobState.SUCCEEDED, job
    preference_id = job.result.additional_properties["preference_id"]
    mp_sandbox.pay(preference_id)

    get_balance = operation("credits_.get_credits_balance")

    def credited() -> Any:
        balance = get_balance.sync(client=client)
        assert isinstance(balance, models.Balance), balance
        return balance if balance.balance == 100 else None

    wait_for(credited, timeout=30, what="the credits")

    inbox = operation("notifications.get_notifications_inbox")

    def notified() -> Any:
        rows = inbox.sync(client=client)
        assert isinstance(rows, list), rows
        return [n for n in rows if n.kind == "credits.purchase_approved"]

    (notification,) = wait_for(notified, timeout=30, what="the purchase notification")
    assert isinstance(notification, models.Notification)
    assert notification.read is False


def test_a_generated_client_sees_the_documented_errors(
    generated: Any, mp_sandbox: MercadoPagoSandbox, token: Callable[..., str]
) -> None:
    """Refusals parse into the Problem model (problem+json), not an unexpected status."""
    models = importlib.import_module(f"{PACKAGE}.models")
    spend = operation("credits_.post_credits_spend")
    client = generated.AuthenticatedClient(
        base_url=mp_sandbox.app_url,
        token=token(f"client-{uuid.uuid4().hex[:8]}"),
        raise_on_unexpected_status=True,
    )
    short = spend.sync_detailed(client=client, body=models.Spend(amount=5))
    assert short.status_code == 409
    assert isinstance(short.parsed, models.Problem) and short.parsed.status == 409
    anonymous = generated.Client(base_url=mp_sandbox.app_url, raise_on_unexpected_status=True)
    refused = spend.sync_detailed(client=anonymous, body=models.Spend(amount=5))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
