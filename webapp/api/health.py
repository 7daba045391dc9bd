"""Health of every dependency: 200 when healthy or degraded, 503 when a critical one is down."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from market import health
from market.mercadopago import MercadoPagoGateway
from workflows import control

blp = Blueprint("health", __name__, url_prefix="/api/v1/advanced/health", description="Health")


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ok", "degraded", "down"]})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Dict())
    degraded = ma.fields.List(ma.fields.String())


def dependencies() -> list[health.Dependency]:
    settings = current_app.extensions["spartan.settings"]
    engine = current_app.extensions["spartan.engine"]
    return [
        health.Dependency("database", health.database_check(engine), critical=True),
        health.Dependency("broker", health.broker_check(settings.celery_broker_url), critical=True),
        health.Dependency("redis", health.redis_check(settings.redis_url), critical=False),
        health.Dependency("workers", control.workers_check, critical=False, timeout_s=2.5),
        health.Dependency(
            "beat",
            health.beat_check(current_app.extensions["spartan.redis"], settings.key_prefix),
            critical=False,
        ),
        health.Dependency(
            "mercadopago",
            health.ping_check(
                MercadoPagoGateway(
                    settings.mercadopago_access_token, settings.mercadopago_api_base_url
                ).ping,
                "MercadoPago",
            ),
            critical=False,
            timeout_s=2.5,
        ),
        health.Dependency(
            "disk",
            health.disk_check(settings.media_root, settings.alert_disk_free_pct),
            critical=False,
        ),
    ]


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A critical dependency is down")
    def get(self) -> Any:
        """Every dependency's state, each check bounded in time."""
        report = health.run_checks(dependencies())
        report["degraded"] = health.summarize(report)
        return report, (503 if report["status"] == "down" else 200)
