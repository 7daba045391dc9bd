"""Tasks that exist only to test the job machinery with a real worker."""

from __future__ import annotations

import time

from market.errors import ProviderTransientError
from workers import runtime
from workers.app import app
from workers.base import StepTask


@app.task(base=StepTask, name="maintenance.test_record")
def test_record(*, key: str, value: str) -> dict[str, str]:
    """Append `value` to the Redis list `key` and report it in the job result."""
    runtime.redis_client().rpush(key, value)
    return {key.rsplit(":", 1)[-1]: value}


@app.task(base=StepTask, name="maintenance.test_fail")
def test_fail(*, reason: str) -> None:
    raise ValueError(reason)


@app.task(base=StepTask, name="maintenance.test_provider_down", max_retries=0)
def test_provider_down(*, host: str) -> None:
    """Fail as the MercadoPago client does when the provider cannot be reached (no retry)."""
    raise ProviderTransientError(
        f"MercadoPago unreachable: HTTPConnectionPool(host='{host}', port=443): Max retries "
        "exceeded with url: /v1/payments/123 (Caused by NewConnectionError('Failed to "
        "establish a new connection: [Errno 111] Connection refused'))"
    )


@app.task(base=StepTask, name="maintenance.test_block")
def test_block(*, key: str, timeout_s: float = 15.0) -> dict[str, bool]:
    """Wait until the Redis key `key` exists (a latch the test opens), bounded in time."""
    deadline = time.monotonic() + timeout_s
    client = runtime.redis_client()
    client.set(f"{key}:entered", 1)
    while not client.exists(key):
        if time.monotonic() > deadline:
            raise TimeoutError("latch never opened")
        time.sleep(0.02)
    return {"unblocked": True}


@app.task(base=StepTask, name="payments.test_move_money")
def test_move_money(*, key: str) -> None:
    runtime.redis_client().rpush(key, "moved")
