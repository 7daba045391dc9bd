"""Tasks that exist only to test the job machinery with a real worker."""

from __future__ import annotations

import time

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
