"""Cache reads sent in the rate limiter's round trip: a cached read is one Redis round trip.

An endpoint declares the cache entry it is going to read (`declare`). Before the limits are
checked, that entry's read is put in the same pipeline as the limiter's hit
(`OneTripRedisStorage.send_with_next_hit`, webapp/limits.py), and the view's
`Cache.get_or_load` answers from its reply instead of a round trip of its own.

flask-limiter's semantics and headers are untouched: its hit is the same script on the same
key, and its answer decides as before. The read only happens a moment earlier: if the request
is then refused (429, 401) it was a read for nothing, never a change. When nothing is sent
ahead (no limit applies, Redis is down, the caller is not known yet), the view reads as usual.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app, g, request

from webapp.limits import OneTripRedisStorage

# (endpoint, method) -> the entry the view reads: (namespace, id), or None to read as usual.
Entry = Callable[[], tuple[str, str] | None]
_ENTRIES: dict[tuple[str, str], Entry] = {}


def declare(endpoint: str, method: str, entry: Entry) -> None:
    """`endpoint`'s `method` reads the cache entry `entry()` names (it runs before the view)."""
    _ENTRIES[(endpoint, method)] = entry


def init_app(app: Flask) -> None:
    """Register the hooks; call before flask-limiter's `init_app` (its check must come after)."""
    cache = app.extensions["spartan.cache"]

    @app.before_request
    def _send_ahead() -> None:
        entry = _ENTRIES.get((request.endpoint or "", request.method))
        if entry is None:
            return
        storage = current_app.extensions["spartan.limiter"].storage
        found = entry()
        if found is None or not isinstance(storage, OneTripRedisStorage):
            return
        namespace, ident = found
        g.read_ahead = storage
        storage.send_with_next_hit(
            lambda pipe: cache.queue_read(pipe, namespace, ident),
            lambda reply: cache.keep_read(namespace, ident, reply),
        )

    @app.teardown_request
    def _forget(exc: BaseException | None) -> None:
        storage = g.pop("read_ahead", None)
        if storage is not None:
            storage.drop_riders()
            cache.forget_reads()
