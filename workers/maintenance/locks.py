"""The Redis lock a periodic task holds while it runs, so two runs never overlap."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from workers import runtime

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


@contextmanager
def singleton(name: str, ttl_s: int) -> Iterator[bool]:
    """Hold the Redis lock `name` while the block runs; yields False when another run holds it."""
    client = runtime.redis_client()
    key = f"{runtime.settings().key_prefix}:lock:{name}"
    token = uuid.uuid4().hex
    acquired = bool(client.set(key, token, nx=True, ex=ttl_s))
    try:
        yield acquired
    finally:
        if acquired:
            # Compare-and-delete: a run that outlived its TTL must not free a successor's lock.
            client.eval(_RELEASE, 1, key, token)
