"""Dependency checks, each bounded in time so a hung dependency cannot hang the report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
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


# Operations checks ----------------------------------------------------------------------

BEAT_INTERVAL_S = 30.0
# Degraded once the heartbeat is older than about three beats.
BEAT_STALE_AFTER_S = 3 * BEAT_INTERVAL_S + 5


def beat_heartbeat_key(prefix: str) -> str:
    return f"{prefix}:beat:heartbeat"


def write_beat_heartbeat(client: redis.Redis, prefix: str, *, now: float | None = None) -> float:
    """Record that a beat-scheduled task just ran (idempotent)."""
    stamp = time.time() if now is None else now
    client.set(beat_heartbeat_key(prefix), repr(stamp), ex=int(BEAT_STALE_AFTER_S * 20))
    return stamp


def worker_heartbeats_key(prefix: str) -> str:
    return f"{prefix}:workers:heartbeats"


# A worker silent this long is dropped from the set (it stays visible as stale until then).
WORKER_HEARTBEAT_KEEP_S = 24 * 3600


def record_worker_heartbeat(
    client: redis.Redis, prefix: str, worker: str, *, now: float | None = None
) -> None:
    """Record that `worker` (its node name) just sent a Celery heartbeat (idempotent)."""
    client.zadd(worker_heartbeats_key(prefix), {worker: time.time() if now is None else now})


def worker_heartbeats(client: redis.Redis, prefix: str) -> dict[str, float]:
    """{worker node name: unix time of its last heartbeat}, forgetting the long dead."""
    key = worker_heartbeats_key(prefix)
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", time.time() - WORKER_HEARTBEAT_KEEP_S)
    pipe.zrange(key, 0, -1, withscores=True)
    _, rows = pipe.execute()
    return {(w.decode() if isinstance(w, bytes) else w): float(t) for w, t in rows}


def beat_heartbeat_at(client: redis.Redis, prefix: str) -> float | None:
    """Unix time of the last beat heartbeat, or None when none is recorded."""
    raw = client.get(beat_heartbeat_key(prefix))
    return None if raw is None else float(raw)


def beat_check(
    client: redis.Redis, prefix: str, stale_after_s: float = BEAT_STALE_AFTER_S
) -> Check:
    """Down when the beat heartbeat is missing or older than `stale_after_s`."""

    def check() -> dict[str, Any]:
        stamp = beat_heartbeat_at(client, prefix)
        if stamp is None:
            raise RuntimeError("no beat heartbeat recorded")
        age = time.time() - stamp
        if age > stale_after_s:
            raise RuntimeError(f"last beat heartbeat {age:.0f}s ago (limit {stale_after_s:.0f}s)")
        return {"heartbeat_age_s": round(age, 1)}

    return check


def disk_check(path: Path, min_free_pct: float) -> Check:
    """Down when the disk holding `path` has less than `min_free_pct` percent free."""

    def check() -> dict[str, Any]:
        from market.ops.metrics import disk_free_pct

        free = disk_free_pct(path)
        if free < min_free_pct:
            raise RuntimeError(f"{free}% free on the media disk (minimum {min_free_pct}%)")
        return {"free_pct": free}

    return check


def ping_check(ping: Callable[[], Any], what: str) -> Check:
    """Down when `ping()` raises or answers falsy; a dict answer is reported."""

    def check() -> dict[str, Any]:
        answer = ping()
        if not answer:
            raise RuntimeError(f"{what} did not answer or refused our credentials")
        return answer if isinstance(answer, dict) else {}

    return check


# Queues ---------------------------------------------------------------------------------

# Header the publisher stamps on every task message (workers.observability): its send time.
SENT_AT_HEADER = "spartan_sent_at"


def queue_depths(
    broker_url: str,
    queues: Mapping[str, str],
    *,
    global_keyprefix: str = "",
    timeout_s: float = 2.0,
) -> dict[str, int]:
    """Messages waiting per queue ({label: broker queue name}); a queue never declared is 0."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    if broker_url.startswith("redis"):
        return _redis_queue_depths(broker_url, queues, global_keyprefix, timeout_s)
    depths: dict[str, int] = {}
    with Connection(broker_url, connect_timeout=timeout_s) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
        channel = conn.channel()
        try:
            for label, name in queues.items():
                try:
                    depths[label] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    depths[label] = 0
                    # AMQP closes the channel on a failed passive declare.
                    channel.close()
                    channel = conn.channel()
        finally:
            channel.close()
    return depths


def _redis_queue_depths(
    broker_url: str, queues: Mapping[str, str], global_keyprefix: str, timeout_s: float
) -> dict[str, int]:
    """LLEN of each queue's lists (kombu keeps one per priority step), read directly.

    kombu's passive queue_declare cannot be used here: its EXISTS is not in the commands
    `global_keyprefix` rewrites, so with a prefix every queue would read as missing (0).
    """
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    client = redis.Redis.from_url(
        broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        pipe = client.pipeline(transaction=False)
        for name in queues.values():
            for step in PRIORITY_STEPS:
                suffix = f"{Channel.sep}{step}" if step else ""
                pipe.llen(f"{global_keyprefix}{name}{suffix}")
        lengths = pipe.execute()
    finally:
        client.close()
    per_queue = len(PRIORITY_STEPS)
    return {
        label: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, label in enumerate(queues)
    }


def oldest_message_age(
    broker_url: str, queues: Mapping[str, str], *, global_keyprefix: str = ""
) -> dict[str, float | None]:
    """Age in seconds of the next message of each queue (None when empty); Redis brokers only.

    kombu's Redis transport LPUSHes and BRPOPs, so the oldest message is the list's tail. AMQP
    cannot peek without taking the message (a basic.get + requeue marks it redelivered and may
    reorder it), so other brokers give {}: unknown, which callers must not read as "empty".
    """
    if not broker_url.startswith("redis"):
        return {}
    client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        for name in queues.values():
            pipe.lindex(f"{global_keyprefix}{name}", -1)
        tails = pipe.execute()
    finally:
        client.close()
    now = time.time()
    ages: dict[str, float | None] = {}
    for label, raw in zip(queues, tails, strict=True):
        ages[label] = None
        if raw is None:
            continue
        try:
            sent_at = json.loads(raw)["headers"].get(SENT_AT_HEADER)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if sent_at is not None:
            ages[label] = round(max(0.0, now - float(sent_at)), 1)
    return ages
