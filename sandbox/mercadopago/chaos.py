"""Random failures and delays of the REST API, to exercise retries and timeouts."""

from __future__ import annotations

import random
import threading
from typing import Any

from sandbox.mercadopago.common import ApiError

OFF: dict[str, Any] = {
    "error_rate": 0.0,
    "timeout_rate": 0.0,
    "delay_ms": 0,
    "error_status": 500,
    "hang_s": 30.0,
}


class Chaos:
    """The chaos settings; `apply` sleeps or fails one REST request as they say."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Chaos off; wake whoever sleeps in a chaos delay."""
        with self._lock:
            self._cancel.set()
            self._cancel = threading.Event()
            self.settings = dict(OFF)
            self._rng = random.Random()

    def close(self) -> None:
        self._cancel.set()

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Turn on random failures of the REST API (all zero: off); returns the settings."""
        try:
            chaos = {
                "error_rate": float(config.get("error_rate", 0)),
                "timeout_rate": float(config.get("timeout_rate", 0)),
                "delay_ms": int(config.get("delay_ms", 0)),
                "error_status": int(config.get("error_status", 500)),
                "hang_s": float(config.get("hang_s", 30)),
            }
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"invalid chaos settings: {exc}") from exc
        if not (
            0 <= chaos["error_rate"] <= 1
            and 0 <= chaos["timeout_rate"] <= 1
            and chaos["delay_ms"] >= 0
            and 400 <= chaos["error_status"] <= 599
            and chaos["hang_s"] >= 0
        ):
            raise ApiError(400, "rates within 0..1, delay_ms and hang_s >= 0, error_status 4xx/5xx")
        with self._lock:
            self.settings = chaos
            self._rng = random.Random(config.get("seed"))
            return dict(self.settings)

    def apply(self) -> None:
        """Sleep or fail this REST request as the chaos settings say."""
        with self._lock:
            chaos, cancel = dict(self.settings), self._cancel
            roll_timeout, roll_error = self._rng.random(), self._rng.random()
        if chaos["delay_ms"]:
            cancel.wait(chaos["delay_ms"] / 1000)
        if roll_timeout < chaos["timeout_rate"]:
            cancel.wait(chaos["hang_s"])
        if roll_error < chaos["error_rate"]:
            raise ApiError(chaos["error_status"], "sandbox chaos: injected failure", "chaos")
