"""Request metrics (shared across processes), per-user metrics, /metrics, system, request ids."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from market.models import (
    PaymentEvent,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)
from market.ops import health
from market.ops.metrics import MAX_WINDOW_MINUTES
from market.ops.metrics_buffer import FLUSH_INTERVAL_S
from tests.support.mercadopago import buy, wait_status
from tests.support.poll import wait_for

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v1/advanced/metrics"
TASK_ROUTE = "GET /api/v1/advanced/tasks/<uuid:task_id>"
# Counts compared before and after are read over a window longer than the run (its key prefix
# is its own): over the last 5 minutes, a minute of earlier tests' requests could leave the
# window between the two reads.
WHOLE_RUN = f"minutes={MAX_WINDOW_MINUTES}"


def _endpoint(client, admin, endpoint: str) -> dict:
    body = client.get(f"{BASE}/endpoints?{WHOLE_RUN}", headers=admin).get_json()
    return next((e for e in body["endpoints"] if e["endpoint"] == endpoint), {"requests": 0})


def test_requests_are_counted_by_route_template_with_percentiles(client, admin, alice):
    before = _endpoint(client, admin, TASK_ROUTE)["requests"]
    for _ in range(5):
        assert (
            client.get(f"/api/v1/advanced/tasks/{uuid.uuid4()}", headers=alice).status_code == 404
        )
    row = _endpoint(client, admin, TASK_ROUTE)
    assert row["requests"] - before == 5
    assert row["status_classes"]["4xx"] >= 5
    assert row["method"] == "GET" and row["route"] == "/api/v1/advanced/tasks/<uuid:task_id>"
    assert set(row["latency_ms"]) == {"avg", "p50", "p90", "p95", "p99"}
    assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
    totals = client.get(f"{BASE}/requests?{WHOLE_RUN}", headers=admin).get_json()
    assert totals["requests"] >= row["requests"]
    assert 0 <= totals["error_rate"] <= 1


def test_metrics_endpoints_are_for_admins(client, alice):
    for path in ("/requests", "/endpoints", "/system", "/users"):
        assert client.get(BASE + path, headers=alice).status_code == 403
        assert client.get(BASE + path).status_code == 401


def test_per_user_request_metrics_and_heaviest_users(client, admin, make_user, user_id_of):
    heavy, light = make_user(), make_user()
    for _ in range(6):
        client.get("/api/v1/advanced/tasks", headers=heavy)
    client.get(f"/api/v1/advanced/tasks/{uuid.uuid4()}", headers=light)
    heavy_id, light_id = str(user_id_of(heavy)), str(user_id_of(light))
    mine = client.get(f"{BASE}/users/{heavy_id}?minutes=5", headers=admin).get_json()
    assert mine["user_id"] == heavy_id
    assert mine["requests"] == 6 and mine["status_classes"]["2xx"] == 6
    assert mine["latency_ms"]["p95"] is not None
    other = client.get(f"{BASE}/users/{light_id}?minutes=5", headers=admin).get_json()
    assert other["requests"] == 1 and other["client_errors"] == 1
    top = client.get(f"{BASE}/users?minutes=5&limit=500", headers=admin).get_json()["users"]
    ranks = [u["user_id"] for u in top]
    assert ranks.index(heavy_id) < ranks.index(light_id)


def test_system_metrics(client, admin):
    body = client.get(f"{BASE}/system", headers=admin).get_json()
    assert 0 <= body["cpu"]["percent"] <= 100 * body["cpu"]["count"]
    assert body["memory"]["total_bytes"] > 0
    assert 0 < body["disk"]["percent_free"] <= 100
    assert body["database"]["total"] >= 1
    assert "total" in body["connections"]


def test_request_id_is_echoed_or_made(client):
    made = client.get("/api/openapi.json").headers["X-Request-ID"]
    assert len(made) >= 16
    sent = "req-" + uuid.uuid4().hex
    assert (
        client.get("/api/openapi.json", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
        == sent
    )
    # Garbage is not echoed back (header injection, log pollution).
    assert (
        client.get("/api/openapi.json", headers={"X-Request-ID": "a b"}).headers["X-Request-ID"]
        != "a b"
    )


def test_json_logs_carry_the_request_id(app_with, capsys, alice):
    client = app_with(log_json=True, log_level="INFO").test_client()
    sent = "trace-" + uuid.uuid4().hex
    client.get("/api/v1/advanced/tasks", headers={**alice, "X-Request-ID": sent})
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    mine = [line for line in lines if line.get("request_id") == sent]
    assert mine, lines
    assert mine[-1]["route"] == "/api/v1/advanced/tasks" and mine[-1]["status"] == 200
    assert mine[-1]["user_id"]


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.usefixtures("worker")
def test_prometheus_text_parses_and_needs_admin_or_token(app_with, admin, alice):
    client = app_with(metrics_token="scrape-" + uuid.uuid4().hex).test_client()
    token = client.application.extensions["spartan.settings"].metrics_token
    client.get("/api/v1/advanced/tasks", headers=alice)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=alice).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    by_token = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert by_token.status_code == 200
    by_admin = client.get("/metrics", headers=admin)
    assert by_admin.status_code == 200
    families = _families(by_admin.get_data(as_text=True))
    assert "spartan_http_requests" in families
    assert "spartan_http_request_duration_seconds" in families
    queues = {s.labels["queue"] for s in families["spartan_queue_depth"].samples}
    assert queues == {"payments", "media", "notifications", "maintenance"}
    assert "spartan_queue_oldest_message_age_seconds" in families
    assert "spartan_jobs" in families


def _gauge(families: dict, name: str, **labels: str) -> float | None:
    family = families.get(name)
    assert family is not None, f"{name} missing from /metrics"
    found = [s.value for s in family.samples if s.labels == labels]
    return found[0] if found else None


@pytest.mark.usefixtures("worker")
def test_prometheus_ledger_payment_lag_and_delivery_gauges(
    app, client, db, admin, alice, user_id_of, mp_sandbox
):
    def scrape() -> dict:
        answer = client.get("/metrics", headers=admin)
        assert answer.status_code == 200
        return _families(answer.get_data(as_text=True))

    before = scrape()
    checkout = buy(client, alice, "credits-500")
    payment = mp_sandbox.pay(checkout["preference_id"])
    purchase = wait_status(app, checkout["purchase_id"], "approved")
    received = db.execute(
        select(func.min(PaymentEvent.received_at)).where(PaymentEvent.data_id == str(payment["id"]))
    ).scalar_one()
    lag = (purchase.approved_at - received).total_seconds()
    endpoint = WebhookEndpoint(
        owner_id=user_id_of(alice), url="https://example.com/h", events=["*"], secret="whsec_x"
    )
    db.add(endpoint)
    db.flush()
    event = f"test.metrics.{uuid.uuid4().hex[:8]}"
    for state in ("succeeded", "failed", "failed", "pending"):
        delivery = WebhookDelivery(
            endpoint_id=endpoint.id, event_type=event, payload="{}", state=state
        )
        db.add(delivery)
        db.flush()
        # Attempts: a 2xx succeeded; a 500 and a timeout (no status) failed.
        for n, (code, error) in enumerate(((200, None), (500, None), (None, "timed out"))):
            db.add(
                WebhookDeliveryAttempt(
                    delivery_id=delivery.id,
                    number=n + 1,
                    trigger="initial",
                    status_code=code,
                    duration_ms=3,
                    error=error,
                )
            )
    db.commit()
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return (_gauge(after, name, **labels) or 0) - (_gauge(before, name, **labels) or 0)

    assert delta("spartan_ledger_wallet_credits") == 500
    assert delta("spartan_ledger_system_account_credits", account="system:sales") == -500
    accounts = after["spartan_ledger_system_account_credits"].samples
    assert {s.labels["account"] for s in accounts} == {
        "system:sales",
        "system:consumed",
        "system:reversed",
    }
    # Double entry: what the wallets hold is what the system accounts gave out.
    assert _gauge(after, "spartan_ledger_wallet_credits") + sum(s.value for s in accounts) == 0
    assert _gauge(after, "spartan_payment_credit_lag_samples") >= 1
    assert _gauge(after, "spartan_payment_credit_lag_seconds", stat="max") >= lag - 0.001
    p50 = _gauge(after, "spartan_payment_credit_lag_seconds", stat="p50")
    assert 0 <= p50 <= _gauge(after, "spartan_payment_credit_lag_seconds", stat="max")
    assert _gauge(after, "spartan_payment_events_unprocessed") >= 0
    assert _gauge(after, "spartan_payment_events_oldest_unprocessed_age_seconds") >= 0
    # Other tests of the run send late retries (20 minutes): only its presence is checked
    # here; tests/webapp/test_credits.py checks a late event's recorded lateness.
    assert _gauge(after, "spartan_payment_events_max_lateness_seconds") >= 0
    by_state = {
        state: _gauge(after, "spartan_webhook_deliveries", event_type=event, state=state)
        for state in ("succeeded", "failed", "pending")
    }
    assert by_state == {"succeeded": 1, "failed": 2, "pending": 1}
    assert delta("spartan_webhook_delivery_attempts_recent", outcome="succeeded") == 4
    assert delta("spartan_webhook_delivery_attempts_recent", outcome="failed") == 8


@pytest.mark.usefixtures("worker")
def test_prometheus_beat_heartbeat_and_media_disk(client, admin, settings):
    redis_client = client.application.extensions["spartan.redis"]
    key = health.beat_heartbeat_key(settings.key_prefix)
    redis_client.delete(key)
    families = _families(client.get("/metrics", headers=admin).get_data(as_text=True))
    # No heartbeat at all: no sample, which an alert rule's absent() sees.
    assert not families["spartan_beat_heartbeat_timestamp_seconds"].samples
    stamp = health.write_beat_heartbeat(redis_client, settings.key_prefix, now=1_800_000_000.5)
    families = _families(client.get("/metrics", headers=admin).get_data(as_text=True))
    assert _gauge(families, "spartan_beat_heartbeat_timestamp_seconds") == stamp
    size = _gauge(families, "spartan_media_disk_size_bytes")
    free = _gauge(families, "spartan_media_disk_free_bytes")
    assert 0 < free <= size
    health.write_beat_heartbeat(redis_client, settings.key_prefix)


@pytest.mark.usefixtures("worker")
def test_prometheus_worker_heartbeats(client, admin, settings):
    """Each worker's last heartbeat; one silent for a day is forgotten."""
    redis_client = client.application.extensions["spartan.redis"]
    node = f"w-{uuid.uuid4().hex[:6]}@host"
    gone = f"gone-{uuid.uuid4().hex[:6]}@host"
    health.record_worker_heartbeat(redis_client, settings.key_prefix, node, now=1_800_000_000)
    health.record_worker_heartbeat(
        redis_client, settings.key_prefix, gone, now=time.time() - 2 * 24 * 3600
    )
    families = _families(client.get("/metrics", headers=admin).get_data(as_text=True))
    assert _gauge(families, "spartan_worker_heartbeat_timestamp_seconds", worker=node) == 1.8e9
    assert _gauge(families, "spartan_worker_heartbeat_timestamp_seconds", worker=gone) is None
    redis_client.zrem(health.worker_heartbeats_key(settings.key_prefix), node)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def gunicorn(tmp_path):
    """A real gunicorn with two workers on this run's database and Redis prefix."""
    port = _free_port()
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    token = "scrape-" + uuid.uuid4().hex
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "METRICS_TOKEN": token,
        "RATE_LIMIT_DEFAULT": "10000/minute",
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "webapp:create_app()",
            "--workers",
            "2",
            "--no-control-socket",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/api/openapi.json", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=30, what="gunicorn to answer")
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2, what="two workers")
        yield proc, base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_request_metrics_are_exact_across_gunicorn_workers_and_a_restart(gunicorn, admin, alice):
    proc, base, token = gunicorn
    session = requests.Session()

    def count() -> int:
        body = session.get(f"{base}{BASE}/endpoints?{WHOLE_RUN}", headers=admin, timeout=10).json()
        return next((e["requests"] for e in body["endpoints"] if e["endpoint"] == TASK_ROUTE), 0)

    def hit(_: int) -> int:
        url = f"{base}/api/v1/advanced/tasks/{uuid.uuid4()}"
        return requests.get(url, headers=alice, timeout=10).status_code

    def scraped() -> float:
        auth = {"Authorization": f"Bearer {token}"}
        text = session.get(f"{base}/metrics", headers=auth, timeout=10).text
        return sum(
            s.value
            for s in _families(text)["spartan_http_requests"].samples
            if s.name == "spartan_http_requests_total"
            and s.labels["route"] == "/api/v1/advanced/tasks/<uuid:task_id>"
        )

    before, scraped_before = count(), scraped()
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(hit, range(40)))
    assert first == [404] * 40
    # Each worker flushes its counts to Redis within a second (market/ops/metrics_buffer):
    # once they show, a worker dies and is replaced; the counts it made stay counted.
    wait_for(lambda: count() - before == 40, what="the first 40 requests to be flushed")
    victim = psutil.Process(proc.pid).children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(
        lambda: (
            victim.pid not in [c.pid for c in psutil.Process(proc.pid).children()]
            and len(psutil.Process(proc.pid).children()) == 2
        ),
        what="the worker to be replaced",
    )
    with ThreadPoolExecutor(8) as pool:
        second = list(pool.map(hit, range(40)))
    assert second == [404] * 40
    # Each live worker flushes within a second: then the total is exactly 80 (the dead worker's
    # 40 included), and stays so.
    wait_for(lambda: count() - before >= 80, what="the second 40 requests to be flushed")
    time.sleep(2 * FLUSH_INTERVAL_S)  # one more flush of every worker: nothing counted twice
    assert count() - before == 80

    # Served from the counters every worker flushes to Redis (shared by every process of this
    # run's prefix): the dead worker's still count.
    assert scraped() - scraped_before == 80
