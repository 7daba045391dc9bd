"""Health in three layers: live (touches nothing), ready (database and broker, cached), and
/health: anonymous callers get up/down from a shared cached report, operators a fresh one.

Apps whose dependencies are broken get their own key prefix, so the report they share in
Redis is theirs alone and never reaches another test's app.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

HEALTH = "/api/v1/advanced/health"
DEAD_BROKER = "redis://127.0.0.1:1/0"
DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture()
def isolated(app_with: Callable[..., Flask], settings: Any) -> Callable[..., Flask]:
    """An app like `app_with` gives, under a key prefix of its own (shared report, limits)."""

    def make(**changes: Any) -> Flask:
        changes.setdefault("key_prefix", f"{settings.key_prefix}h{uuid.uuid4().hex[:6]}")
        return app_with(**changes)

    return make


@pytest.mark.usefixtures("worker")
def test_operators_get_every_detail(app_with, mp_sandbox, settings, admin):
    from market.ops import health
    from workers import runtime

    health.write_beat_heartbeat(runtime.redis_client(), settings.key_prefix)
    client = app_with(mercadopago_api_base_url=mp_sandbox.url).test_client()
    response = client.get(HEALTH, headers=admin)
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "ok", body
    assert set(body["checks"]) >= {"database", "redis", "broker", "workers", "beat", "mercadopago"}
    assert body["checks"]["workers"]["workers"] >= 1
    assert "latency_ms" in body["checks"]["database"]
    assert body["degraded"] == []


@pytest.mark.parametrize(
    ("change", "failing"),
    [({"celery_broker_url": DEAD_BROKER}, "broker"), ({"database_url": DEAD_DATABASE}, "database")],
)
def test_503_when_a_critical_dependency_is_unreachable(isolated, admin, change, failing):
    client = isolated(**change).test_client()
    detailed = client.get(HEALTH, headers=admin)
    body = detailed.get_json()
    assert detailed.status_code == 503
    assert body["status"] == "down"
    assert body["checks"][failing]["status"] == "down"
    assert body["checks"][failing]["error"]
    assert failing in body["degraded"]
    anonymous = client.get(HEALTH)
    assert anonymous.status_code == 503
    assert anonymous.get_json()["checks"][failing] == {"status": "down", "critical": True}


def test_redis_down_is_degraded_not_down(app_with, admin):
    client = app_with(redis_url=DEAD_REDIS).test_client()
    body = client.get(HEALTH, headers=admin).get_json()
    assert body["checks"]["redis"]["status"] == "degraded"
    # Anonymous callers still get an answer: each process keeps its own copy meanwhile.
    anonymous = client.get(HEALTH)
    assert anonymous.status_code == 200
    assert anonymous.get_json()["checks"]["redis"]["status"] == "degraded"


def test_anonymous_callers_get_states_without_error_text(isolated):
    response = isolated(celery_broker_url=DEAD_BROKER, database_url=DEAD_DATABASE).test_client()
    answer = response.get(HEALTH)
    body = answer.get_json()
    assert answer.status_code == 503
    assert set(body) == {"status", "checks", "degraded"}
    for entry in body["checks"].values():
        assert set(entry) <= {"status", "critical"}, entry
    text = answer.get_data(as_text=True)
    for leak in ("127.0.0.1", ":1", "Error", "nowhere", "postgres", "refused", "latency"):
        assert leak not in text, leak


def test_anonymous_requests_share_one_check(isolated, mp_sandbox):
    """Two app processes (two gunicorn workers), 24 anonymous requests at once: one round of
    checks between them, so MercadoPago is asked once."""
    first = isolated(mercadopago_api_base_url=mp_sandbox.url)
    second = isolated(
        mercadopago_api_base_url=mp_sandbox.url,
        key_prefix=first.extensions["spartan.settings"].key_prefix,
    )
    before = mp_sandbox.calls("GET /users/me")

    def ask(i: int) -> int:
        return (first if i % 2 else second).test_client().get(HEALTH).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(ask, range(24)))
    assert set(statuses) <= {200, 503}
    assert mp_sandbox.calls("GET /users/me") - before == 1


def test_the_metrics_token_gets_a_fresh_check(isolated, mp_sandbox):
    app = isolated(mercadopago_api_base_url=mp_sandbox.url, metrics_token="ops-health-token")
    client = app.test_client()
    bearer = {"Authorization": "Bearer ops-health-token"}
    before = mp_sandbox.calls("GET /users/me")
    for _ in range(2):
        body = client.get(HEALTH, headers=bearer).get_json()
        assert "latency_ms" in body["checks"]["mercadopago"]
    assert mp_sandbox.calls("GET /users/me") - before == 2
    # What the operator's check found is what anonymous callers now read.
    client.get(HEALTH)
    assert mp_sandbox.calls("GET /users/me") - before == 2
    wrong = client.get(HEALTH, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401


def test_anonymous_health_is_rate_limited(isolated):
    client = isolated(rate_limit_default="2/minute").test_client()
    statuses = [client.get(HEALTH).status_code for _ in range(3)]
    assert 429 not in statuses[:2] and statuses[2] == 429
    assert client.get(f"{HEALTH}/live").status_code == 200  # probes are not limited


def test_live_touches_nothing(isolated):
    """Database, broker and Redis all unreachable, limit 1/minute: the process still answers."""
    client = isolated(
        database_url=DEAD_DATABASE,
        celery_broker_url=DEAD_BROKER,
        redis_url=DEAD_REDIS,
        rate_limit_default="1/minute",
    ).test_client()
    for _ in range(3):
        answer = client.get(f"{HEALTH}/live")
        assert answer.status_code == 200
        assert answer.get_json() == {"status": "ok"}


def test_ready_means_database_and_broker(app, isolated):
    ready = app.test_client().get(f"{HEALTH}/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    unready = isolated(database_url=DEAD_DATABASE).test_client().get(f"{HEALTH}/ready")
    assert unready.status_code == 503
    assert unready.get_json()["checks"] == {"database": "down", "broker": "ok"}
