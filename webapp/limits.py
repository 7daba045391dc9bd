"""Rate limits (flask-limiter on Redis), all declared here by request path and method.

Every limit is an application limit checked before the view runs, so it applies whatever
the endpoint then answers (4xx included) and whichever module defines the endpoint:
- `default` (RATE_LIMIT_DEFAULT): every request of a caller, across endpoints;
- `buy`, `spend`, `upload` (RATE_LIMIT_BUY/SPEND/UPLOAD): only their POST, on top of it.
The caller is the verified user, or the client address when anonymous (or the token is bad).
MercadoPago's webhook, /metrics and the liveness and readiness probes are exempt: they are not
user traffic (the probes are cheap by design). `/health` is limited like any other endpoint: an
anonymous caller gets a shared cached report, and the limit stops a loop from holding a worker.
So are CORS preflights (OPTIONS): they carry no token, and one refused with 429 hides the real
answer from the browser script.
A breach answers 429 problem+json with Retry-After, X-RateLimit-* and RateLimit-* headers.
If Redis is unreachable the limits fall back to per-process memory (logged), never a 500.

One Redis round trip per limit hit: the counter's script also answers its TTL, which is
what flask-limiter then asks for (two more round trips) to write the headers. A request can
send other commands in that same round trip (`send_with_next_hit`): a cached read sends its
cache read with the limiter's hit (`webapp/read_ahead.py`), so it makes one round trip in all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from flask_limiter import ApplicationLimit, Limiter
from limits.storage import RedisStorage
from redis.exceptions import NoScriptError
from werkzeug.exceptions import HTTPException

from webapp.auth import identify

PREFIX = "/api/v1/advanced"
# (scope, method, path, setting)
ENDPOINT_LIMITS = (
    ("buy", "POST", f"{PREFIX}/credits/buy", "rate_limit_buy"),
    ("spend", "POST", f"{PREFIX}/credits/spend", "rate_limit_spend"),
    ("upload", "POST", f"{PREFIX}/profile/avatar/upload", "rate_limit_upload"),
)
EXEMPT_PATHS = frozenset(
    {
        f"{PREFIX}/webhooks/mercadopago",
        f"{PREFIX}/health/live",
        f"{PREFIX}/health/ready",
        "/metrics",
    }
)
STORAGE_SCHEME = "spartan+redis"

# limits' own increment, answering the TTL too (so the window needs no second read).
_INCR_EXPIRE_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call('INCRBY', KEYS[1], amount)
if current == amount then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {current, redis.call('TTL', KEYS[1])}
"""
# A window read back this soon after the hit that returned it is the hit's own answer.
_FRESH_S = 1.0
_MAX_REMEMBERED = 32


class OneTripRedisStorage(RedisStorage):
    """limits' Redis storage whose `incr` also remembers the window it answered, per thread.

    flask-limiter hits the limit, then reads the count and the TTL back for the headers
    (`get`, `get_expiry`): the same figures the hit just returned, so they are answered from
    memory. Semantics and headers are flask-limiter's; a count read back without a fresh hit
    of this thread still goes to Redis.
    """

    STORAGE_SCHEME = [STORAGE_SCHEME]

    def __init__(self, uri: str, **options: object) -> None:
        super().__init__(uri.replace(f"{STORAGE_SCHEME}://", "redis://", 1), **options)  # type: ignore[arg-type]
        self._seen = threading.local()

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_ttl = self.get_connection().register_script(_INCR_EXPIRE_TTL)

    def send_with_next_hit(
        self, send: Callable[[Any], bool], receive: Callable[[Any], None]
    ) -> None:
        """Have this thread's next hit also send `send(pipeline)`'s one command (when it
        returns True) and give its reply, or the error Redis answered, to `receive`. Call
        `drop_riders` when the request ends: a request no limit applies to sends nothing."""
        riders = getattr(self._seen, "riders", None)
        if riders is None:
            riders = self._seen.riders = []
        riders.append((send, receive))

    def drop_riders(self) -> None:
        self._seen.riders = None

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        riders = getattr(self._seen, "riders", None)
        if riders:
            self._seen.riders = None
            count, ttl = self._incr_with(riders, key, expiry, amount)
        else:
            count, ttl = self.lua_incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
        windows = self._windows()
        if len(windows) > _MAX_REMEMBERED:  # only this request's few limits matter
            windows.clear()
        windows[key] = (int(count), max(int(ttl), 0) + time.time(), time.monotonic())
        return int(count)

    def _incr_with(
        self,
        riders: list[tuple[Callable[[Any], bool], Callable[[Any], None]]],
        key: str,
        expiry: int,
        amount: int,
    ) -> tuple[int, int]:
        """The hit and the riders' commands in one pipeline: one round trip."""
        pipe = self.get_connection().pipeline(transaction=False)
        script = self.lua_incr_expire_ttl
        pipe.evalsha(script.sha, 1, self.prefixed_key(key), expiry, amount)
        sent = [receive for send, receive in riders if send(pipe)]
        replies = pipe.execute(raise_on_error=False)
        for receive, reply in zip(sent, replies[1:], strict=True):
            receive(reply)
        hit = replies[0]
        if isinstance(hit, NoScriptError):  # Redis restarted: the script call loads it again
            return script([self.prefixed_key(key)], [expiry, amount])
        if isinstance(hit, Exception):
            raise hit
        return hit

    def get(self, key: str) -> int:
        fresh = self._fresh(key)
        return fresh[0] if fresh is not None else super().get(key)

    def get_expiry(self, key: str) -> float:
        fresh = self._fresh(key)
        return fresh[1] if fresh is not None else super().get_expiry(key)

    def _windows(self) -> dict[str, tuple[int, float, float]]:
        windows = getattr(self._seen, "windows", None)
        if windows is None:
            windows = self._seen.windows = {}
        return windows

    def _fresh(self, key: str) -> tuple[int, float] | None:
        found = self._windows().get(key)
        if found is None or time.monotonic() - found[2] > _FRESH_S:
            return None
        return found[0], found[1]


class ParsedOnceLimit(ApplicationLimit):
    """flask-limiter's application limit, its text parsed once instead of on every request
    (the settings it comes from never change in a process)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        parsed = self.__dict__.get("_parsed")
        if parsed is None:
            parsed = self.__dict__["_parsed"] = tuple(super().__iter__())
        return iter(parsed)


def caller_key() -> str:
    """`user:<firebase uid>` for a verified caller, else `ip:<address>`."""
    try:
        identity = identify()
    except HTTPException:  # a bad token: the view answers 401, the address is limited
        identity = None
    if identity is not None:
        return f"user:{identity.uid}"
    return f"ip:{request.remote_addr or 'unknown'}"


def _not_request(method: str, path: str) -> Callable[[], bool]:
    def exempt() -> bool:
        return not (request.method == method and request.path.rstrip("/") == path)

    return exempt


def _exempt_from_default() -> bool:
    return request.method == "OPTIONS" or request.path.rstrip("/") in EXEMPT_PATHS


def init_app(app: Flask) -> Limiter:
    """Install the limiter; call after the blueprints are registered (and after observability)."""
    settings = app.extensions["spartan.settings"]
    limits = [
        ParsedOnceLimit(
            settings.rate_limit_default,
            scope="default",
            exempt_when=_exempt_from_default,
        )
    ]
    for scope, method, path, setting in ENDPOINT_LIMITS:
        limits.append(
            ParsedOnceLimit(
                getattr(settings, setting),
                scope=scope,
                exempt_when=_not_request(method, path),
            )
        )
    limiter = Limiter(
        caller_key,
        application_limits=limits,
        storage_uri=settings.redis_url.replace("redis://", f"{STORAGE_SCHEME}://", 1),
        storage_options={"socket_timeout": 1, "socket_connect_timeout": 1},
        key_prefix=f"{settings.key_prefix}:ratelimit",
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    app.extensions["spartan.limiter"] = limiter

    # Registered before flask-limiter's own hook, so it runs after it (Flask runs them reversed).
    @app.after_request
    def _ietf_headers(response: Response) -> Response:
        # The IETF draft's names beside flask-limiter's X-RateLimit-* (same limit, same numbers).
        if "X-RateLimit-Limit" in response.headers:
            reset_in = max(
                0, int(float(response.headers.get("X-RateLimit-Reset", 0)) - time.time())
            )
            response.headers["RateLimit-Limit"] = response.headers["X-RateLimit-Limit"]
            response.headers["RateLimit-Remaining"] = response.headers["X-RateLimit-Remaining"]
            response.headers["RateLimit-Reset"] = str(reset_in)
        return response

    # Its before_request hook must run before flask-limiter's check (hooks run in order).
    from webapp import read_ahead

    read_ahead.init_app(app)
    limiter.init_app(app)
    return limiter
