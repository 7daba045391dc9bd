"""Dependency checks, each bounded in time so a hung dependency cannot hang the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import text
from sqlalchemy.engine import Engine

Check = Callable[[], dict[str, Any] | None]

# One shared pool: a check that hangs past its timeout keeps a thread, not the request.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")


@dataclass(frozen=True)
class Dependency:
    name: str
    check: Check
    critical: bool
    timeout_s: float = 2.0


def run_checks(dependencies: list[Dependency]) -> dict[str, Any]:
    """Run every check concurrently; `status` is ok, degraded (a non-critical one down) or down."""
    started = {d.name: (time.monotonic(), _POOL.submit(d.check)) for d in dependencies}
    report: dict[str, Any] = {}
    for dep in dependencies:
        t0, future = started[dep.name]
        remaining = max(0.0, dep.timeout_s - (time.monotonic() - t0))
        try:
            details = future.result(timeout=remaining) or {}
            entry = {"status": "ok", **details}
        except FutureTimeout:
            entry = {"status": "down", "error": f"no answer within {dep.timeout_s:g}s"}
        except Exception as exc:
            entry = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
        if entry["status"] != "ok" and not dep.critical:
            entry["status"] = "degraded"
        entry["critical"] = dep.critical
        entry["latency_ms"] = round((time.monotonic() - t0) * 1000, 1)
        report[dep.name] = entry
    statuses = {e["status"] for e in report.values()}
    overall = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
    return {"status": overall, "checks": report}


def database_check(engine: Engine, timeout_s: float = 2.0) -> Check:
    def check() -> dict[str, Any]:
        with engine.connect() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}"))
            conn.execute(text("SELECT 1"))
        return {}

    return check


def redis_check(url: str, timeout_s: float = 2.0) -> Check:
    def check() -> dict[str, Any]:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            client.ping()
        finally:
            client.close()
        return {}

    return check


def broker_check(url: str, timeout_s: float = 2.0) -> Check:
    def check() -> dict[str, Any]:
        from kombu import Connection

        with Connection(url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
        return {}

    return check


def summarize(report: Mapping[str, Any]) -> list[str]:
    """Names of the dependencies that are not ok."""
    return [name for name, entry in report["checks"].items() if entry["status"] != "ok"]
