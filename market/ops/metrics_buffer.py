"""Hash increments added up in the process and sent to Redis in the background.

A request used to pay one Redis round trip for its metrics. Here it only adds to a dict; a
daemon thread sends everything added since the last flush as one pipeline (HINCRBY,
HINCRBYFLOAT, EXPIRE) every `interval` seconds, and once more at exit. HINCRBY is atomic,
so the sums of any number of processes are exact once each has flushed: at most `interval`
late. A process killed without warning (SIGKILL, OOM) loses at most its last interval.

Readers that need this process's figures now (an admin view served by the same process)
call `flush()` first.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
MAX_BACKOFF = 16
# Past this many distinct counters waiting (Redis down for long), new ones are dropped.
MAX_PENDING = 200_000
_BUFFERS: weakref.WeakSet[HashIncrements] = weakref.WeakSet()


class HashIncrements:
    """Pending `HINCRBY`/`HINCRBYFLOAT` of hash fields, flushed in the background."""

    def __init__(self, client: redis.Redis, *, interval: float = FLUSH_INTERVAL_S) -> None:
        self._r = client
        self._interval = interval
        self._reset()
        _BUFFERS.add(self)

    def _reset(self) -> None:
        # Also after a fork: the child starts with nothing owed and a thread of its own.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ints: dict[tuple[str, str], int] = {}
        self._floats: dict[tuple[str, str], float] = {}
        self._ttls: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        # Set while Redis refuses flushes (the outage was logged when it began).
        self.failing = False

    def add(
        self,
        key: str,
        ints: Iterable[tuple[str, int]] = (),
        floats: Iterable[tuple[str, float]] = (),
        ttl: int | None = None,
    ) -> None:
        """Add to fields of `key` (never blocks on Redis, never raises)."""
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            if len(self._ints) + len(self._floats) > MAX_PENDING:
                return
            for name, amount in ints:
                self._ints[key, name] = self._ints.get((key, name), 0) + amount
            for name, amount in floats:
                self._floats[key, name] = self._floats.get((key, name), 0.0) + amount
            if ttl is not None:
                self._ttls[key] = ttl
            if self._thread is None:
                self._start()

    def _start(self) -> None:
        # The thread holds the buffer weakly: it ends when the buffer (its app) is gone.
        self._thread = threading.Thread(
            target=_flush_loop,
            args=(weakref.ref(self), self._interval, os.getpid()),
            name="metrics-flush",
            daemon=True,
        )
        self._thread.start()

    def flush(self) -> int:
        """Send what is pending in one pipeline; returns the number of fields sent.

        On a Redis error what was taken is put back (and the error raised): a later flush
        sends it. Not idempotent by nature: a reply lost after Redis applied the pipeline
        would count it twice, a risk a counter accepts.
        """
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            ints, self._ints = self._ints, {}
            floats, self._floats = self._floats, {}
            ttls, self._ttls = self._ttls, {}
        if not (ints or floats or ttls):
            return 0
        pipe = self._r.pipeline(transaction=True)
        for (key, name), amount in ints.items():
            pipe.hincrby(key, name, amount)
        for (key, name), value in floats.items():
            pipe.hincrbyfloat(key, name, round(value, 6))
        for key, ttl in ttls.items():
            pipe.expire(key, ttl)
        try:
            pipe.execute()
        except redis.RedisError:
            self._put_back(ints, floats, ttls)
            raise
        return len(ints) + len(floats)

    def _put_back(
        self,
        ints: dict[tuple[str, str], int],
        floats: dict[tuple[str, str], float],
        ttls: dict[str, int],
    ) -> None:
        with self._lock:
            for k, v in ints.items():
                self._ints[k] = self._ints.get(k, 0) + v
            for k, f in floats.items():
                self._floats[k] = self._floats.get(k, 0.0) + f
            for key, ttl in ttls.items():
                self._ttls.setdefault(key, ttl)


def _flush_loop(ref: weakref.ref[HashIncrements], interval: float, pid: int) -> None:
    failures = 0
    while os.getpid() == pid:
        # While Redis is down, try less often (up to 16 intervals apart) and warn once.
        time.sleep(interval * min(2**failures, MAX_BACKOFF))
        buffer = ref()
        if buffer is None:
            return
        try:
            buffer.flush()
        except redis.RedisError as exc:
            if not failures:
                log.warning("request metrics not flushed (Redis unavailable): %s", exc)
            failures += 1
            buffer.failing = True
        else:
            buffer.failing = False
            if failures:
                log.info("request metrics flushed again after %d failed attempts", failures)
            failures = 0
        del buffer


@atexit.register
def _flush_all_at_exit() -> None:
    for buffer in list(_BUFFERS):
        if buffer._pid != os.getpid() or buffer.failing:
            continue  # another process's, or Redis is down and the loss was logged already
        try:
            buffer.flush()
        except redis.RedisError as exc:
            log.warning("request metrics lost at exit (Redis unavailable): %s", exc)
