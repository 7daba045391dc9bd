"""Request id, timing and metrics of every request; JSON logs carrying the ids.

The request id comes from X-Request-ID when the client sends a sane one (so a proxy's id
follows the request) or is made here; it is echoed in the answer, bound to the log context
and put by `workers.observability` into the headers of every task sent while handling it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from market import logging as log_context
from market.ops import metrics

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")
# Probes are not traffic, and liveness must touch nothing (Redis included): never recorded there.
UNRECORDED_PATHS = frozenset({"/api/v1/advanced/health/live", "/api/v1/advanced/health/ready"})


def route_of() -> str:
    """The route template (`/api/.../<uuid:task_id>`), never the raw path."""
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def caller_id() -> str | None:
    """The caller's user id when the request identified one (no extra verification)."""
    user_id = g.get("user_id")
    return str(user_id) if user_id is not None else None


def init_app(app: Flask) -> None:
    """Register the hooks; call before any other before_request hook (they are timed too)."""
    settings = app.extensions["spartan.settings"]
    log_context.configure(level=settings.log_level, json_lines=settings.log_json)
    # Counted in memory, flushed to Redis in the background: no round trip per request.
    recorder = metrics.RequestMetrics(app.extensions["spartan.redis"], settings.key_prefix)
    app.extensions["spartan.request_metrics"] = recorder

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        g.log_token = log_context.bind(request_id=g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        started = g.get("request_started")
        if started is None:  # a request that failed before our first hook
            return response
        response.headers[REQUEST_ID_HEADER] = g.request_id
        duration_ms = (time.perf_counter() - started) * 1000
        route, status, user_id = route_of(), response.status_code, caller_id()
        if request.path not in UNRECORDED_PATHS:
            recorder.record(
                method=request.method,
                route=route,
                status=status,
                duration_ms=duration_ms,
                user_id=user_id,
            )
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "%s %s %d",
            request.method,
            request.path,
            status,
            extra={
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 2),
                "user_id": user_id,
                # The client's address: behind TRUSTED_PROXIES, ProxyFix's (webapp/edge.py).
                "client_addr": request.remote_addr,
            },
        )
        return response

    @app.teardown_request
    def _unbind(exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            try:
                log_context.reset(token)
            except ValueError:  # bound in another context (e.g. a copied app context)
                log_context.clear()
