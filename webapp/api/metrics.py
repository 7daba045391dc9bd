"""Request metrics (shared by every web process), system metrics, and Prometheus text."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
import redis
from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from market.errors import ServiceUnavailableError
from market.ops import gauges, health, metrics
from webapp import db
from webapp.auth import admin_required, current_user, operator_token_ok
from webapp.errors import ProblemSchema
from workflows import control

log = logging.getLogger(__name__)

blp = Blueprint(
    "metrics", __name__, url_prefix="/api/v1/advanced/metrics", description="Metrics (admin)"
)
prometheus_blp = Blueprint("prometheus", __name__, url_prefix="/", description="Prometheus")


class WindowArgs(ma.Schema):
    minutes = ma.fields.Integer(
        load_default=60, validate=ma.validate.Range(1, metrics.MAX_WINDOW_MINUTES)
    )


class TopArgs(WindowArgs):
    limit = ma.fields.Integer(load_default=20, validate=ma.validate.Range(1, 500))


class StatsSchema(ma.Schema):
    requests = ma.fields.Integer()
    errors = ma.fields.Integer(metadata={"description": "5xx answers"})
    client_errors = ma.fields.Integer(metadata={"description": "4xx answers"})
    error_rate = ma.fields.Float()
    client_error_rate = ma.fields.Float()
    status_classes = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    latency_ms = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(allow_none=True))


class WindowSchema(StatsSchema):
    window_minutes = ma.fields.Integer()
    until = ma.fields.DateTime()


class EndpointStatsSchema(StatsSchema):
    endpoint = ma.fields.String(metadata={"description": "METHOD and route template"})
    method = ma.fields.String()
    route = ma.fields.String()


class EndpointsSchema(ma.Schema):
    window_minutes = ma.fields.Integer()
    until = ma.fields.DateTime()
    endpoints = ma.fields.List(ma.fields.Nested(EndpointStatsSchema))


class UserStatsSchema(StatsSchema):
    user_id = ma.fields.String()


class UsersSchema(ma.Schema):
    window_minutes = ma.fields.Integer()
    until = ma.fields.DateTime()
    users = ma.fields.List(ma.fields.Nested(UserStatsSchema))


class UserWindowSchema(UserStatsSchema):
    window_minutes = ma.fields.Integer()
    until = ma.fields.DateTime()


def _recorder() -> metrics.RequestMetrics:
    return current_app.extensions["spartan.request_metrics"]


def _window(minutes: int) -> dict[str, Any]:
    return {"window_minutes": minutes, "until": datetime.now(UTC)}


def _shared(read: Any) -> Any:
    try:
        return read()
    except redis.RedisError as exc:
        raise ServiceUnavailableError(f"request metrics live in Redis, unreachable: {exc}") from exc


@blp.route("/requests")
class Requests(MethodView):
    @admin_required
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, WindowSchema)
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Totals, error rate, status classes and latency percentiles over the last minutes."""
        per_endpoint = _shared(lambda: _recorder().endpoints(args["minutes"]))
        return {**_window(args["minutes"]), **metrics.summary(per_endpoint)}


@blp.route("/endpoints")
class Endpoints(MethodView):
    @admin_required
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, EndpointsSchema)
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The same per endpoint (method and route template), busiest first."""
        per_endpoint = _shared(lambda: _recorder().endpoints(args["minutes"]))
        rows = []
        for endpoint, stats in per_endpoint.items():
            method, _, route = endpoint.partition(" ")
            rows.append({"endpoint": endpoint, "method": method, "route": route, **stats.as_dict()})
        rows.sort(key=lambda r: (-r["requests"], r["endpoint"]))
        return {**_window(args["minutes"]), "endpoints": rows}


@blp.route("/users")
class Users(MethodView):
    @admin_required
    @blp.arguments(TopArgs, location="query")
    @blp.response(200, UsersSchema)
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The heaviest users by requests over the last minutes."""
        per_user = _shared(lambda: _recorder().users(args["minutes"]))
        rows = [{"user_id": uid, **stats.as_dict()} for uid, stats in per_user.items()]
        rows.sort(key=lambda r: (-r["requests"], r["user_id"]))
        return {**_window(args["minutes"]), "users": rows[: args["limit"]]}


@blp.route("/users/<uuid:user_id>")
class UserRequests(MethodView):
    @admin_required
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, UserWindowSchema)
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self, args: dict[str, Any], user_id: uuid.UUID) -> dict[str, Any]:
        """One user's request counts, errors and latency over the last minutes."""
        stats = _shared(lambda: _recorder().user(str(user_id), args["minutes"]))
        return {**_window(args["minutes"]), "user_id": str(user_id), **stats.as_dict()}


@blp.route("/system")
class System(MethodView):
    @admin_required
    @blp.response(200)
    def get(self) -> dict[str, Any]:
        """CPU, memory, disk of MEDIA_ROOT, open connections (host and database)."""
        settings = current_app.extensions["spartan.settings"]
        report = metrics.system_snapshot(settings.media_root)
        report["database"] = metrics.database_connections(db.session())
        return report


@prometheus_blp.route("/metrics")
class Prometheus(MethodView):
    @prometheus_blp.doc(security=[{"bearerAuth": []}])
    @prometheus_blp.response(200, content_type="text/plain")
    @prometheus_blp.alt_response(401, schema=ProblemSchema)
    @prometheus_blp.alt_response(403, schema=ProblemSchema)
    def get(self) -> Response:
        """Prometheus text: requests, latency, queues, jobs, payments lag, deliveries, ledger.

        Needs an admin token or `Authorization: Bearer <METRICS_TOKEN>`.
        """
        if not operator_token_ok():
            user = current_user()
            if not user.is_admin:
                from flask_smorest import abort

                abort(403, message="administrators or the metrics token only")
        body, content_type = metrics.exposition(
            [metrics.HttpCollector(_recorder()), metrics.GaugeCollector(_domain_gauges)]
        )
        return Response(body, content_type=content_type)


Gauges = dict[str, tuple[str, list[str], list[Any]]]


def _domain_gauges() -> Gauges:
    """Queue depths, jobs, payment lag, deliveries, ledger totals, beat's heartbeat and the media
    disk, read at scrape time.

    A probe that fails (a dependency down) leaves its families out instead of failing the scrape.
    """
    settings = current_app.extensions["spartan.settings"]
    queues = {q: control.queue_name(q) for q in control.QUEUES}
    keyprefix = settings.celery_queue_prefix
    found: Gauges = {}

    def probe(what: str, read: Callable[[], Gauges]) -> None:
        try:
            found.update(read())
        except Exception as exc:  # reported as missing series, and logged
            log.warning("metrics probe %s failed: %s", what, exc)

    def queue_gauges() -> Gauges:
        depths = health.queue_depths(settings.celery_broker_url, queues, global_keyprefix=keyprefix)
        ages = health.oldest_message_age(
            settings.celery_broker_url, queues, global_keyprefix=keyprefix
        )
        return {
            "spartan_queue_depth": (
                "Messages waiting per Celery queue",
                ["queue"],
                [(q, n) for q, n in depths.items()],
            ),
            "spartan_queue_oldest_message_age_seconds": (
                "Age of the next message waiting per queue (0 when empty; Redis brokers only)",
                ["queue"],
                [(q, age or 0) for q, age in ages.items()],
            ),
        }

    def beat_gauges() -> Gauges:
        stamp = health.beat_heartbeat_at(
            current_app.extensions["spartan.redis"], settings.key_prefix
        )
        # No heartbeat recorded: no sample, so `absent()` in an alert rule sees it.
        return {
            "spartan_beat_heartbeat_timestamp_seconds": (
                "Unix time of the last beat heartbeat (maintenance.beat_heartbeat, every 30 s)",
                [],
                [] if stamp is None else [(stamp,)],
            )
        }

    def disk_gauges() -> Gauges:
        total, free = metrics.disk_bytes(settings.media_root)
        return {
            "spartan_media_disk_free_bytes": (
                "Bytes free on the disk holding MEDIA_ROOT",
                [],
                [(free,)],
            ),
            "spartan_media_disk_size_bytes": (
                "Size in bytes of the disk holding MEDIA_ROOT",
                [],
                [(total,)],
            ),
        }

    def worker_gauges() -> Gauges:
        beats = health.worker_heartbeats(
            current_app.extensions["spartan.redis"], settings.key_prefix
        )
        return {
            "spartan_worker_heartbeat_timestamp_seconds": (
                "Unix time of each Celery worker's last heartbeat (sent every 2 s)",
                ["worker"],
                sorted(beats.items()),
            )
        }

    probe("queues", queue_gauges)
    probe("workers", worker_gauges)
    probe("database", lambda: gauges.operations_gauges(db.session()))
    probe("beat", beat_gauges)
    probe("disk", disk_gauges)
    return found
