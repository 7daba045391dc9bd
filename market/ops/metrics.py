"""Request metrics shared by every web process, in Redis: one hash per minute.

A request adds to its minute's hash: a count, its status class, its latency bucket and the
latency sum, under the endpoint's route template and, when the caller is known, under the
user's id; and to one never-expiring hash of cumulative counters that `/metrics` serves as
Prometheus counters. The increments are added up in the process and flushed by a background
thread (`metrics_buffer`: at least once a second and at exit), so a request makes no Redis
round trip for them. Hash increments are atomic, so any number of gunicorn workers (and
their restarts) add up exactly once flushed; percentiles are read from the buckets.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString
from sqlalchemy import text
from sqlalchemy.orm import Session

from market.ops.metrics_buffer import HashIncrements

log = logging.getLogger(__name__)

# Upper bounds of the latency buckets, in milliseconds (the last bucket is everything above).
BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, math.inf)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PERCENTILES = (50, 90, 95, 99)
RETENTION_MINUTES = 25 * 60
MAX_WINDOW_MINUTES = 24 * 60
_SEP = "|"


def bucket_index(duration_ms: float) -> int:
    for i, bound in enumerate(BUCKETS_MS):
        if duration_ms <= bound:
            return i
    return len(BUCKETS_MS) - 1


def percentile(buckets: list[int], q: float) -> float | None:
    """The q-th percentile (0-100) of bucketed latencies, interpolated within its bucket."""
    total = sum(buckets)
    if not total:
        return None
    rank = q / 100 * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            lower = BUCKETS_MS[i - 1] if i else 0.0
            upper = BUCKETS_MS[i]
            if math.isinf(upper):
                return lower
            return round(lower + (upper - lower) * (rank - seen) / n, 1)
        seen += n
    return BUCKETS_MS[-2]


@dataclass
class Stats:
    """Counts and latencies of a set of requests."""

    count: int = 0
    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_MS))
    total_ms: float = 0.0

    def add(self, stat: str, value: str | bytes) -> None:
        if stat == "n":
            self.count += int(value)
        elif stat == "ms":
            self.total_ms += float(value)
        elif stat.startswith("s") and stat[1:] in self.classes:
            self.classes[stat[1:]] += int(value)
        elif stat.startswith("b") and stat[1:].isdigit() and int(stat[1:]) < len(self.buckets):
            self.buckets[int(stat[1:])] += int(value)

    def merge(self, other: Stats) -> None:
        self.count += other.count
        self.total_ms += other.total_ms
        for k, v in other.classes.items():
            self.classes[k] += v
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def as_dict(self) -> dict[str, Any]:
        errors = self.classes["5xx"]
        client_errors = self.classes["4xx"]
        return {
            "requests": self.count,
            "errors": errors,
            "client_errors": client_errors,
            "error_rate": round(errors / self.count, 4) if self.count else 0.0,
            "client_error_rate": round(client_errors / self.count, 4) if self.count else 0.0,
            "status_classes": dict(self.classes),
            "latency_ms": {
                "avg": round(self.total_ms / self.count, 2) if self.count else None,
                **{f"p{q}": percentile(self.buckets, q) for q in PERCENTILES},
            },
        }


class RequestMetrics:
    """Per-minute request counters in Redis, per endpoint and per user, and cumulative ones."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._pending = HashIncrements(client)

    def _key(self, kind: str, minute: int) -> str:
        return f"{self._prefix}:metrics:{kind}:{minute}"

    @property
    def cumulative_key(self) -> str:
        return f"{self._prefix}:metrics:http-total"

    def record(
        self,
        *,
        method: str,
        route: str,
        status: int,
        duration_ms: float,
        user_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """Count one finished request (in memory: no round trip; flushed in the background)."""
        minute = int((now if now is not None else time.time()) // 60)
        bucket = bucket_index(duration_ms)
        stats = (("n", 1), (f"s{status // 100}xx", 1), (f"b{bucket}", 1))
        targets = [(self._key("req", minute), f"{method} {route}")]
        if user_id:
            targets.append((self._key("users", minute), str(user_id)))
        for key, label in targets:
            self._pending.add(
                key,
                ints=[(f"{label}{_SEP}{stat}", amount) for stat, amount in stats],
                floats=[(f"{label}{_SEP}ms", duration_ms)],
                ttl=RETENTION_MINUTES * 60,
            )
        series = f"{method}{_SEP}{route}"
        self._pending.add(
            self.cumulative_key,
            ints=[(f"n{_SEP}{series}{_SEP}{status}", 1), (f"b{_SEP}{series}{_SEP}{bucket}", 1)],
            floats=[(f"ms{_SEP}{series}", duration_ms)],
        )

    def flush(self) -> None:
        """Send this process's pending counts now (readers call it; raises RedisError)."""
        self._pending.flush()

    def _minutes(self, window: int, now: float | None) -> list[int]:
        window = max(1, min(int(window), MAX_WINDOW_MINUTES))
        last = int((now if now is not None else time.time()) // 60)
        return list(range(last - window + 1, last + 1))

    def _collect(self, kind: str, window: int, now: float | None) -> dict[str, Stats]:
        self.flush()
        pipe = self._r.pipeline(transaction=False)
        for minute in self._minutes(window, now):
            pipe.hgetall(self._key(kind, minute))
        found: dict[str, Stats] = {}
        for hash_ in pipe.execute():
            for raw_field, value in hash_.items():
                name = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
                label, _, stat = name.rpartition(_SEP)
                found.setdefault(label, Stats()).add(stat, value)
        return found

    def endpoints(self, window: int = 60, now: float | None = None) -> dict[str, Stats]:
        """Stats per "METHOD /route/<template>" over the last `window` minutes."""
        return self._collect("req", window, now)

    def users(self, window: int = 60, now: float | None = None) -> dict[str, Stats]:
        """Stats per user id over the last `window` minutes."""
        return self._collect("users", window, now)

    def user(self, user_id: str, window: int = 60, now: float | None = None) -> Stats:
        """One user's stats (only that user's fields are read)."""
        names = ["n", "ms"] + [f"s{c}" for c in STATUS_CLASSES]
        names += [f"b{i}" for i in range(len(BUCKETS_MS))]
        fields = [f"{user_id}{_SEP}{n}" for n in names]
        self.flush()
        pipe = self._r.pipeline(transaction=False)
        for minute in self._minutes(window, now):
            pipe.hmget(self._key("users", minute), fields)
        stats = Stats()
        for values in pipe.execute():
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    stats.add(name, value)
        return stats


def total(stats: Iterable[Stats]) -> Stats:
    merged = Stats()
    for s in stats:
        merged.merge(s)
    return merged


def summary(per_endpoint: Mapping[str, Stats]) -> dict[str, Any]:
    """Totals over every endpoint."""
    return total(per_endpoint.values()).as_dict()


# Prometheus -------------------------------------------------------------------------------
# The request counter and latency histogram come from the cumulative hash every web process
# flushes to (exact across gunicorn workers, their restarts and hosts sharing the Redis).
# Process-level collectors stay per process: the default registry, or with
# PROMETHEUS_MULTIPROC_DIR set before the process starts, every process's files.


class HttpCollector:
    """`spartan_http_requests` (counter) and `spartan_http_request_duration_seconds`
    (histogram), labelled by method and route template (and status), read at scrape time."""

    def __init__(self, recorder: RequestMetrics) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        try:
            self._recorder.flush()
            raw = self._recorder._r.hgetall(self._recorder.cumulative_key)
        except redis.RedisError as exc:  # the scrape goes on without these families
            log.warning("HTTP request counters unavailable (Redis): %s", exc)
            return
        counts: dict[tuple[str, str, str], float] = {}
        buckets: dict[tuple[str, str], list[int]] = {}
        sums: dict[tuple[str, str], float] = {}
        for raw_field, value in raw.items():
            name = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            kind, method, rest = name.split(_SEP, 2)
            if kind == "ms":
                sums[method, rest] = float(value)
                continue
            route, _, last = rest.rpartition(_SEP)
            if kind == "n":
                counts[method, route, last] = float(value)
            elif kind == "b" and last.isdigit() and int(last) < len(BUCKETS_MS):
                buckets.setdefault((method, route), [0] * len(BUCKETS_MS))[int(last)] += int(value)
        requests = CounterMetricFamily(
            "spartan_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels=["method", "route", "status"],
        )
        for labels, n in sorted(counts.items()):
            requests.add_metric(list(labels), n)
        yield requests
        latency = HistogramMetricFamily(
            "spartan_http_request_duration_seconds",
            "HTTP request latency, by method and route template",
            labels=["method", "route"],
        )
        for labels, per_bucket in sorted(buckets.items()):
            cumulative, running = [], 0
            for bound, n in zip(BUCKETS_MS, per_bucket, strict=True):
                running += n
                cumulative.append((floatToGoString(bound / 1000), running))
            latency.add_metric(list(labels), cumulative, sum_value=sums.get(labels, 0.0))
        yield latency


class _DefaultRegistry:
    """The process's default registry, as one collector of a per-scrape registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(collectors: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The Prometheus text of the process collectors plus `collectors`, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_DefaultRegistry())  # type: ignore[arg-type]
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class GaugeCollector:
    """A collector that asks `probe()` at scrape time for {metric: (help, labels, rows)}."""

    def __init__(self, probe: Callable[[], Mapping[str, tuple[str, list[str], list[Any]]]]):
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, labels, rows) in self._probe().items():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for *label_values, value in rows:
                family.add_metric([str(v) for v in label_values], float(value))
            yield family


# System -----------------------------------------------------------------------------------


def system_snapshot(media_root: Path) -> dict[str, Any]:
    """CPU, memory, disk of MEDIA_ROOT and open connections of this host (psutil)."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(_existing(media_root)))
    try:
        connections = psutil.net_connections(kind="inet")
        by_status: dict[str, int] = {}
        for conn in connections:
            by_status[conn.status] = by_status.get(conn.status, 0) + 1
        conn_report: dict[str, Any] = {"total": len(connections), "by_status": by_status}
    except psutil.AccessDenied:
        conn_report = {"total": None, "error": "not permitted to list connections"}
    process = psutil.Process()
    return {
        "cpu": {
            "percent": psutil.cpu_percent(interval=0.1),
            "count": psutil.cpu_count(),
            "load_avg": [round(x, 2) for x in psutil.getloadavg()],
        },
        "memory": {
            "total_bytes": memory.total,
            "available_bytes": memory.available,
            "percent": memory.percent,
            "process_rss_bytes": process.memory_info().rss,
        },
        "disk": {
            "path": str(media_root),
            "total_bytes": disk.total,
            "free_bytes": disk.free,
            "percent_used": disk.percent,
            "percent_free": round(100 - disk.percent, 2),
        },
        "connections": conn_report,
        "process": {"pid": process.pid, "threads": process.num_threads()},
    }


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (MEDIA_ROOT may not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_free_pct(media_root: Path) -> float:
    usage = psutil.disk_usage(str(_existing(media_root)))
    return round(100 * usage.free / usage.total, 2)


def disk_bytes(media_root: Path) -> tuple[int, int]:
    """Size and free bytes of the disk holding MEDIA_ROOT."""
    usage = psutil.disk_usage(str(_existing(media_root)))
    return usage.total, usage.free


def database_connections(session: Session) -> dict[str, Any]:
    """Connections to this database by state (pg_stat_activity)."""
    rows = session.execute(
        text(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() GROUP BY 1"
        )
    ).all()
    by_state = {state: n for state, n in rows}
    return {"total": sum(by_state.values()), "by_state": by_state}
