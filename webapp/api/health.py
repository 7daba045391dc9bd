"""Health in three layers: liveness, readiness, and every dependency's state.

- `/health/live`: the process answers; nothing else is touched (no database, Redis or limit).
- `/health/ready`: this process reaches the database and the broker; cached a few seconds.
- `/health`: every dependency; 200 when healthy or degraded, 503 when a critical one is down.
  Anonymous callers get each dependency's state from a report shared by every web process and
  refreshed by one of them at most every ~10 s, without error text or timings. Admins and the
  METRICS_TOKEN bearer get the details of a fresh check (which refreshes the shared report).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Flask, current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from market.ops import health
from market.ops.health_cache import LocalReport, SharedReport
from market.payments.mercadopago.client import MercadoPagoGateway
from webapp.auth import identify, operator_token_ok
from workflows import control

blp = Blueprint("health", __name__, url_prefix="/api/v1/advanced/health", description="Health")

SHARED_FRESH_FOR_S = 10.0
READY_FRESH_FOR_S = 3.0
# What anonymous callers see of each dependency.
PUBLIC_FIELDS = ("status", "critical")


# A critical dependency down: a restart or a failover away, as the database's 503 says.
RETRY_AFTER_S = 5


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ok", "degraded", "down", "unknown"]})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Dict())
    degraded = ma.fields.List(ma.fields.String())


class LiveSchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ok"]})


class ReadySchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ready", "unready"]})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())


def init_app(app: Flask) -> None:
    """The reports this app's health routes answer from."""
    settings = app.extensions["spartan.settings"]
    app.extensions["spartan.health"] = SharedReport(
        app.extensions["spartan.redis"], settings.key_prefix, fresh_for_s=SHARED_FRESH_FOR_S
    )
    app.extensions["spartan.readiness"] = LocalReport(READY_FRESH_FOR_S)


def critical_dependencies() -> list[health.Dependency]:
    settings = current_app.extensions["spartan.settings"]
    engine = current_app.extensions["spartan.engine"]
    return [
        health.Dependency("database", health.database_check(engine), critical=True),
        health.Dependency("broker", health.broker_check(settings.celery_broker_url), critical=True),
    ]


def dependencies() -> list[health.Dependency]:
    settings = current_app.extensions["spartan.settings"]
    mercadopago = MercadoPagoGateway(
        settings.mercadopago_access_token, settings.mercadopago_api_base_url
    )
    return [
        *critical_dependencies(),
        health.Dependency("redis", health.redis_check(settings.redis_url), critical=False),
        health.Dependency("workers", control.workers_check, critical=False, timeout_s=2.5),
        health.Dependency(
            "beat",
            health.beat_check(current_app.extensions["spartan.redis"], settings.key_prefix),
            critical=False,
        ),
        health.Dependency(
            "mercadopago",
            health.ping_check(mercadopago.ping, "MercadoPago"),
            critical=False,
            timeout_s=2.5,
        ),
        health.Dependency(
            "disk",
            health.disk_check(settings.media_root, settings.alert_disk_free_pct),
            critical=False,
        ),
    ]


def full_report() -> dict[str, Any]:
    report = health.run_checks(dependencies())
    report["degraded"] = health.summarize(report)
    return report


def public_view(report: dict[str, Any]) -> dict[str, Any]:
    """The report without error text, timings or details: only each dependency's state."""
    checks = {
        name: {k: entry[k] for k in PUBLIC_FIELDS if k in entry}
        for name, entry in report.get("checks", {}).items()
    }
    return {
        "status": report["status"],
        "checks": checks,
        "degraded": [name for name, entry in checks.items() if entry.get("status") != "ok"],
    }


def _is_operator() -> bool:
    """An admin's token or the METRICS_TOKEN bearer (a bad token answers 401)."""
    if operator_token_ok():
        return True
    identity = identify()
    return identity is not None and identity.is_admin


def _answer(body: dict[str, Any], up: bool) -> Any:
    """200, or 503 with Retry-After (a restart or a failover away, as the database's says)."""
    return (body, 200) if up else (body, 503, {"Retry-After": str(RETRY_AFTER_S)})


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A critical dependency is down")
    def get(self) -> Any:
        """Every dependency's state: anonymous, from a shared result at most ~10 s old;
        admins and the METRICS_TOKEN bearer, a fresh check with error text and timings."""
        shared: SharedReport = current_app.extensions["spartan.health"]
        if _is_operator():
            report = full_report()
            shared.store(report)
        else:
            report = public_view(shared.get(full_report))
        return _answer(report, report["status"] in ("ok", "degraded"))


@blp.route("/live")
class Live(MethodView):
    @blp.response(200, LiveSchema)
    def get(self) -> Any:
        """The process answers (for restarts); checks nothing else."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="The database or broker is down")
    def get(self) -> Any:
        """This process reaches the database and the broker (for routing traffic to it);
        answered from a result at most a few seconds old."""
        readiness: LocalReport = current_app.extensions["spartan.readiness"]
        report = readiness.get(lambda: health.run_checks(critical_dependencies()))
        checks = {name: entry["status"] for name, entry in report["checks"].items()}
        up = report["status"] == "ok"
        return _answer({"status": "ready" if up else "unready", "checks": checks}, up)
