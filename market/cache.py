"""Cache-aside on Redis with versioned keys: invalidation never scans and never races a reader.

A value lives at `<prefix>:<namespace>:v<version>:<id>:g<generation>`. The namespace version
is bumped (INCR) to drop a whole namespace; the entry's generation is replaced by a fresh
number from one global counter to drop one entry. A reader reads version and generation
*before* it loads from PostgreSQL and stores under the key built from them, so a reader that
loaded the old row before a write committed can only store under the superseded key, which
nobody reads again: the invalidation that follows the commit cannot be undone by it.

Redis errors never fail a request: the loader answers from PostgreSQL, the client is left
alone for a moment (a dead Redis costs one connection attempt per second, not per request),
and invalidations that could not be sent are replayed before the cache is trusted again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

log = logging.getLogger(__name__)
T = TypeVar("T")

# The report's lifetimes, in seconds.
TTL = {
    "profile": 30 * 60,
    "balance": 5 * 60,
    "public_profile": 60 * 60,
    "avatar_options": 24 * 3600,
}
USER_NAMESPACES = ("profile", "balance", "public_profile")

# A generation key outlives every value stored under it (values live at most their TTL after
# a load that began before the generation changed), so a reset to "no generation" can never
# bring back an old value. Fresh generations come from one counter, so none is ever reused.
_GEN_TTL_FACTOR = 2
_RETRY_AFTER_S = 1.0
_MAX_PENDING = 10_000

# One round trip: the current key of the entry and its value (nil when absent).
_READ = """
local ver = redis.call('GET', KEYS[1]) or '0'
local gen = redis.call('GET', KEYS[2]) or '0'
local key = ARGV[1] .. ':v' .. ver .. ':' .. ARGV[2] .. ':g' .. gen
return {key, redis.call('GET', key)}
"""

# Atomic: a fresh generation for the entry, and the value under the old one freed at once.
_INVALIDATE = """
local ver = redis.call('GET', KEYS[1]) or '0'
local gen = redis.call('GET', KEYS[2]) or '0'
redis.call('DEL', ARGV[1] .. ':v' .. ver .. ':' .. ARGV[2] .. ':g' .. gen)
local fresh = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], fresh, 'EX', tonumber(ARGV[3]))
return fresh
"""


@dataclass
class _ClientState:
    """Per Redis client (so per process): when to try again, and what is owed to it."""

    down_until: float = 0.0
    pending_entries: set[tuple[str, str]] = field(default_factory=set)
    pending_namespaces: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATES: weakref.WeakKeyDictionary[redis.Redis, _ClientState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _state_of(client: redis.Redis) -> _ClientState:
    with _STATES_LOCK:
        state = _STATES.get(client)
        if state is None:
            state = _STATES[client] = _ClientState()
        return state


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Cache:
    """Cache-aside with the report's lifetimes. Values are JSON: a hit and a miss answer alike."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._state = _state_of(client)
        self._read = client.register_script(_READ)
        self._invalidate = client.register_script(_INVALIDATE)
        # Reads sent ahead in another round trip (`queue_read`), per thread: one request's.
        self._ahead = threading.local()

    # Keys -------------------------------------------------------------------------------

    def _ver_key(self, namespace: str) -> str:
        return f"{self._prefix}:ver:{namespace}"

    def _gen_key(self, namespace: str, ident: str) -> str:
        return f"{self._prefix}:gen:{namespace}:{ident}"

    def _invalidate_args(self, namespace: str, ident: str) -> dict[str, Any]:
        return {
            "keys": [
                self._ver_key(namespace),
                self._gen_key(namespace, ident),
                f"{self._prefix}:gen-seq",
            ],
            "args": [f"{self._prefix}:{namespace}", ident, TTL[namespace] * _GEN_TTL_FACTOR],
        }

    def key(self, namespace: str, ident: str) -> str:
        """The key the entry currently lives at (for operators and tests)."""
        ver, gen = self._r.mget(self._ver_key(namespace), self._gen_key(namespace, ident))
        ver_s = int(ver or 0)
        gen_s = int(gen or 0)
        return f"{self._prefix}:{namespace}:v{ver_s}:{ident}:g{gen_s}"

    # Availability -----------------------------------------------------------------------

    def _usable(self) -> bool:
        """False while Redis is in its back-off window or owed invalidations it cannot take."""
        state = self._state
        if time.monotonic() < state.down_until:
            return False
        if state.pending_entries or state.pending_namespaces:
            return self._replay_pending()
        return True

    def _mark_down(self, what: str, exc: Exception) -> None:
        self._state.down_until = time.monotonic() + _RETRY_AFTER_S
        log.warning("cache unavailable (%s), answering from the database: %s", what, exc)

    def _replay_pending(self) -> bool:
        state = self._state
        with state.lock:
            entries, state.pending_entries = state.pending_entries, set()
            namespaces, state.pending_namespaces = state.pending_namespaces, set()
        try:
            pipe = self._r.pipeline(transaction=False)
            for namespace in namespaces:
                pipe.incr(self._ver_key(namespace))
            for namespace, ident in entries:
                self._invalidate(**self._invalidate_args(namespace, ident), client=pipe)
            pipe.execute()
        except redis.RedisError as exc:
            with state.lock:
                state.pending_entries |= entries
                state.pending_namespaces |= namespaces
            self._mark_down("replaying invalidations", exc)
            return False
        log.info("cache back: replayed %d invalidations", len(entries) + len(namespaces))
        return True

    def _owe(self, namespace: str, ident: str | None) -> None:
        state = self._state
        with state.lock:
            if ident is None:
                state.pending_namespaces.add(namespace)
            elif len(state.pending_entries) < _MAX_PENDING:
                state.pending_entries.add((namespace, ident))
            else:
                # Too much owed to remember one by one: drop the whole namespace instead.
                state.pending_namespaces.add(namespace)

    # Reads sent ahead ---------------------------------------------------------------------

    def queue_read(self, pipe: Any, namespace: str, ident: str) -> bool:
        """Add the entry's read to `pipe` (a pipeline someone else sends); False if the cache
        is not to be trusted now. Give its reply to `keep_read`: `get_or_load` then answers
        from it instead of a round trip of its own."""
        if not self._usable():
            return False
        pipe.evalsha(
            self._read.sha,
            2,
            self._ver_key(namespace),
            self._gen_key(namespace, str(ident)),
            f"{self._prefix}:{namespace}",
            str(ident),
        )
        return True

    def keep_read(self, namespace: str, ident: str, reply: Any) -> None:
        """Keep the reply of a `queue_read` for this thread's next `get_or_load` of the entry.
        An error (a script Redis has forgotten, say) is dropped: that read goes to Redis."""
        if not isinstance(reply, Exception):
            self._ahead.reads = {(namespace, str(ident)): reply}

    def forget_reads(self) -> None:
        """Drop what this thread read ahead and did not use (call it when the request ends)."""
        self._ahead.reads = None

    def _read_ahead(self, namespace: str, ident: str) -> Any:
        reads = getattr(self._ahead, "reads", None)
        if not reads:
            return None
        self._ahead.reads = None  # used once, by the request that sent it
        return reads.get((namespace, ident))

    # Public API -------------------------------------------------------------------------

    def get_or_load(self, namespace: str, ident: str, loader: Callable[[], T]) -> T:
        """The cached value, or `loader()` stored for the namespace's TTL (JSON form either way).

        Call it outside any transaction that has written the same data: the loader must read
        what is committed.
        """
        ident = str(ident)
        found = self._read_ahead(namespace, ident)
        if found is None:
            if not self._usable():
                return _as_json(loader())
            try:
                found = self._read(
                    keys=[self._ver_key(namespace), self._gen_key(namespace, ident)],
                    args=[f"{self._prefix}:{namespace}", ident],
                )
            except redis.RedisError as exc:
                self._mark_down("read", exc)
                return _as_json(loader())
        key = found[0].decode() if isinstance(found[0], bytes) else found[0]
        if len(found) > 1 and found[1] is not None:
            return json.loads(found[1])
        raw = json.dumps(loader(), default=str)
        try:
            # Plain SET: if an invalidation ran while we loaded, `key` is already superseded.
            self._r.set(key, raw, ex=TTL[namespace])
        except redis.RedisError as exc:
            self._mark_down("store", exc)
        return json.loads(raw)

    def invalidate(self, namespace: str, ident: str) -> None:
        """Drop one entry (idempotent). Call it after the write commits, before answering."""
        ident = str(ident)
        self.forget_reads()
        if not self._usable():
            self._owe(namespace, ident)
            return
        try:
            self._invalidate(**self._invalidate_args(namespace, ident))
        except redis.RedisError as exc:
            self._owe(namespace, ident)
            self._mark_down(f"invalidate {namespace}:{ident}", exc)

    def invalidate_namespace(self, namespace: str) -> None:
        """Drop every entry of a namespace at once (one INCR, no KEYS scan; idempotent)."""
        self.forget_reads()
        if not self._usable():
            self._owe(namespace, None)
            return
        try:
            self._r.incr(self._ver_key(namespace))
        except redis.RedisError as exc:
            self._owe(namespace, None)
            self._mark_down(f"invalidate {namespace}", exc)

    def invalidate_user(self, user_id: Any) -> None:
        """Drop every entry about one user (own profile, balance, public profile)."""
        for namespace in USER_NAMESPACES:
            self.invalidate(namespace, str(user_id))
