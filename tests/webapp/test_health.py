"""Health: 200 with every dependency up, 503 when a critical one is unreachable."""

from __future__ import annotations

import pytest


@pytest.mark.usefixtures("worker")
def test_healthy_when_everything_answers(app_with, mp_sandbox, settings):
    from market import health
    from workers import runtime

    health.write_beat_heartbeat(runtime.redis_client(), settings.key_prefix)
    client = app_with(mercadopago_api_base_url=mp_sandbox.url).test_client()
    response = client.get("/api/v1/advanced/health")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "ok", body
    assert set(body["checks"]) >= {"database", "redis", "broker", "workers", "beat", "mercadopago"}
    assert body["checks"]["workers"]["workers"] >= 1
    assert body["degraded"] == []


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"celery_broker_url": "redis://127.0.0.1:1/0"}, "broker"),
        ({"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"}, "database"),
    ],
)
def test_503_when_a_critical_dependency_is_unreachable(app_with, change, failing):
    response = app_with(**change).test_client().get("/api/v1/advanced/health")
    body = response.get_json()
    assert response.status_code == 503
    assert body["status"] == "down"
    assert body["checks"][failing]["status"] == "down"
    assert failing in body["degraded"]


def test_redis_down_is_degraded_not_down(app_with):
    body = (
        app_with(redis_url="redis://127.0.0.1:1/0")
        .test_client()
        .get("/api/v1/advanced/health")
        .get_json()
    )
    assert body["checks"]["redis"]["status"] == "degraded"
