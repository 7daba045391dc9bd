"""Health reports computed once and shared: what anonymous callers and readiness probes read.

`SharedReport` keeps the last full report in Redis, so every web process (gunicorn workers,
hosts) answers from the same result; at most one of them refreshes it at a time (a Redis lock),
so N callers in a window cause one round of checks, never N (no provider call, no Celery
broadcast of their own). When Redis is unreachable each process falls back to its own copy,
refreshed by one thread at a time. `LocalReport` is the per-process variant for readiness,
which is about this process's own connections.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

Report = dict[str, Any]
# The report callers get when none exists yet and another process is still computing it.
PENDING: Report = {"status": "unknown", "checks": {}}

# Deletes the lock only if it is still ours (it may have expired and been taken since).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LocalReport:
    """A report cached in this process for `fresh_for_s`, refreshed by one thread at a time."""

    def __init__(self, fresh_for_s: float) -> None:
        self.fresh_for_s = fresh_for_s
        self._lock = threading.Lock()
        self._value: tuple[float, Report] | None = None

    def fresh(self) -> Report | None:
        value = self._value
        if value is not None and time.monotonic() - value[0] < self.fresh_for_s:
            return value[1]
        return None

    def stale(self) -> Report | None:
        return self._value[1] if self._value is not None else None

    def store(self, report: Report) -> None:
        self._value = (time.monotonic(), report)

    def get(self, run: Callable[[], Report]) -> Report:
        """The cached report, or a fresh one (others wait for it rather than run their own)."""
        found = self.fresh()
        if found is not None:
            return found
        with self._lock:
            found = self.fresh()  # another thread refreshed it while this one waited
            if found is None:
                found = run()
                self.store(found)
            return found


class SharedReport:
    """The latest full report in Redis at `<prefix>:health:report`, fresh for `fresh_for_s`."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        fresh_for_s: float = 10.0,
        keep_for_s: float = 300.0,
        refresh_timeout_s: float = 10.0,
        wait_s: float = 4.0,
    ) -> None:
        self.client = client
        self.key = f"{prefix}:health:report"
        self.lock_key = f"{prefix}:health:refreshing"
        self.fresh_for_s = fresh_for_s
        self.keep_for_s = keep_for_s
        self.refresh_timeout_s = refresh_timeout_s
        self.wait_s = wait_s
        self.local = LocalReport(fresh_for_s)

    def get(self, run: Callable[[], Report]) -> Report:
        """A report at most `fresh_for_s` old when one can be had (stale or PENDING otherwise)."""
        try:
            return self._get_shared(run)
        except redis.RedisError as exc:
            log.warning("health report not shared (Redis unavailable): %s", exc)
            return self.local.get(run)

    def store(self, report: Report) -> None:
        """Publish a report computed elsewhere (an operator's fresh check), if Redis answers."""
        self.local.store(report)
        try:
            self._write(report)
        except redis.RedisError as exc:
            log.warning("health report not shared (Redis unavailable): %s", exc)

    def _get_shared(self, run: Callable[[], Report]) -> Report:
        report, age = self._read()
        if report is not None and age < self.fresh_for_s:
            return report
        token = uuid.uuid4().hex
        ttl_ms = int(self.refresh_timeout_s * 1000)
        if self.client.set(self.lock_key, token, nx=True, px=ttl_ms):
            try:
                fresh = run()
                self.store(fresh)
                return fresh
            finally:
                # A failed release only delays the next refresh until the lock expires.
                with contextlib.suppress(redis.RedisError):
                    self.client.eval(_RELEASE, 1, self.lock_key, token)
        if report is not None:
            return report  # somebody is refreshing it: the previous one meanwhile
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            time.sleep(0.05)
            report, _age = self._read()
            if report is not None:
                return report
        return dict(PENDING)

    def _read(self) -> tuple[Report | None, float]:
        raw = self.client.get(self.key)
        if raw is None:
            return None, float("inf")
        stored = json.loads(raw)
        return stored["report"], max(0.0, time.time() - float(stored["checked_at"]))

    def _write(self, report: Report) -> None:
        payload = json.dumps({"checked_at": time.time(), "report": report}, default=str)
        self.client.set(self.key, payload, px=int(self.keep_for_s * 1000))
