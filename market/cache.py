"""Cache-aside on Redis with versioned keys, so invalidation never scans the keyspace.

A key is `<prefix>:<namespace>:v<version>:<id>`; dropping a whole namespace (e.g. every
public profile) bumps its version with one INCR, and old entries expire by their TTL.
Redis errors never fail a request: the caller's loader answers from PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
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


class Cache:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _version(self, namespace: str) -> int:
        raw = self._r.get(f"{self._prefix}:ver:{namespace}")
        return int(raw or 0)

    def key(self, namespace: str, ident: str) -> str:
        return f"{self._prefix}:{namespace}:v{self._version(namespace)}:{ident}"

    def get_or_load(self, namespace: str, ident: str, loader: Callable[[], T]) -> T:
        """The cached value, or `loader()` stored for the namespace's TTL."""
        try:
            key = self.key(namespace, ident)
            raw = self._r.get(key)
            if raw is not None:
                return json.loads(raw)
        except redis.RedisError as exc:
            log.warning("cache unavailable, reading from the database: %s", exc)
            return loader()
        value = loader()
        try:
            self._r.set(key, json.dumps(value, default=str), ex=TTL[namespace])
        except redis.RedisError as exc:
            log.warning("cache unavailable, value not stored: %s", exc)
        return value

    def invalidate(self, namespace: str, ident: str) -> None:
        """Drop one entry. Must run after the write commits, or a reader may re-cache the old."""
        try:
            self._r.delete(self.key(namespace, ident))
        except redis.RedisError as exc:
            log.warning("cache unavailable, %s:%s not invalidated: %s", namespace, ident, exc)

    def invalidate_namespace(self, namespace: str) -> None:
        """Drop every entry of a namespace at once (one INCR, no KEYS scan)."""
        try:
            self._r.incr(f"{self._prefix}:ver:{namespace}")
        except redis.RedisError as exc:
            log.warning("cache unavailable, %s not invalidated: %s", namespace, exc)

    def invalidate_user(self, user_id: Any) -> None:
        """Drop every entry about one user."""
        for namespace in ("profile", "balance", "public_profile"):
            self.invalidate(namespace, str(user_id))
