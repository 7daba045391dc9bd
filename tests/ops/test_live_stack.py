"""Operators' tools against the real stack: Flower shows the worker and its tasks, and a real
Prometheus scraping the web (and Flower) sees what purchases, spends and a failure did.

One stack for the module: gunicorn with two workers as the Procfile starts it, a prefork
`celery worker`, Flower with basic auth, the MercadoPago sandbox, Debian's Prometheus with
deploy/prometheus/prometheus.yml and alerts.yml, scraping every second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from flask import Flask

from market.ops import gauges
from tests.ops.prometheus import metric_names_in_rules
from tests.ops.stack import Prometheus, start_flower, start_web
from tests.reliability.stack import UNLIMITED, Deployment
from tests.support.mercadopago import MercadoPagoSandbox, wait_status
from tests.support.poll import wait_for

pytestmark = pytest.mark.slow

ADV = "/api/v1/advanced"
SPEND = "/api/v1/advanced/credits/spend"
BUY = "/api/v1/advanced/credits/buy"
ME = "/api/v1/advanced/credits/me"
WEBHOOK = "/api/v1/advanced/webhooks/mercadopago"
FLOWER_AUTH = ("operator", "flower-" + uuid.uuid4().hex[:8])


@dataclass
class Stack:
    deployment: Deployment
    web: str
    web_pid: int
    metrics_dir: Path
    flower: str
    prometheus: Prometheus
    worker_node: str

    def call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
        return requests.request(method, self.web + path, headers=headers, timeout=20, **kw)


@pytest.fixture(scope="module")
def stack(mp_sandbox: MercadoPagoSandbox) -> Iterator[Stack]:
    token = "scrape-" + uuid.uuid4().hex
    deployment = Deployment("ops", METRICS_TOKEN=token, RATE_LIMIT_SPEND=UNLIMITED)
    metrics_dir = Path(tempfile.mkdtemp(prefix="spartan-web-metrics-"))
    # A file of an "earlier run": gunicorn_conf must wipe it, or its counts would be added.
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")
    prometheus: Prometheus | None = None
    try:
        web_proc, web = start_web(
            deployment,
            {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
            access_log=metrics_dir / "access.log",
        )
        # The worker makes the preferences: MercadoPago must notify this deployment's web.
        deployment.env["MERCADOPAGO_WEBHOOK_URL"] = deployment.webhook_url
        deployment.start_worker("ops")
        _, flower = start_flower(deployment, ":".join(FLOWER_AUTH))
        prometheus = Prometheus(
            deployment,
            web=web.removeprefix("http://"),
            flower=flower.removeprefix("http://"),
            token=token,
        )
        node = f"ops-{deployment.prefix}@{os.uname().nodename}"
        yield Stack(deployment, web, web_proc.pid, metrics_dir, flower, prometheus, node)
    finally:
        deployment.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if prometheus is not None:
            shutil.rmtree(prometheus.dir, ignore_errors=True)


# Flower ------------------------------------------------------------------------------------


def test_flower_needs_credentials_and_shows_the_worker_and_a_task(stack: Stack):
    for path in ("/", "/api/workers", "/api/tasks"):
        assert requests.get(stack.flower + path, timeout=10).status_code == 401, path
    wrong = requests.get(stack.flower + "/api/workers", auth=("operator", "nope"), timeout=10)
    assert wrong.status_code == 401

    def workers() -> dict[str, Any] | None:
        answer = requests.get(
            stack.flower + "/api/workers", params={"refresh": "1"}, auth=FLOWER_AUTH, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return answer.json() if stack.worker_node in answer.json() else None

    listed = wait_for(workers, timeout=30, interval=0.5, what="flower listing the worker")
    assert listed[stack.worker_node]["stats"]["pool"]["max-concurrency"] == 2

    client = stack.deployment.client
    sent = client.send_task(
        "maintenance.beat_heartbeat", queue=f"{stack.deployment.queue_prefix}maintenance"
    )

    def task() -> dict[str, Any] | None:
        answer = requests.get(
            f"{stack.flower}/api/task/info/{sent.id}", auth=FLOWER_AUTH, timeout=10
        )
        if answer.status_code == 404:
            return None
        body = answer.json()
        return body if body.get("state") == "SUCCESS" else None

    info = wait_for(task, timeout=30, interval=0.3, what="flower showing the task succeeded")
    assert info["name"] == "maintenance.beat_heartbeat"
    assert info["worker"] == stack.worker_node
    listed = requests.get(stack.flower + "/api/tasks", auth=FLOWER_AUTH, timeout=10).json()
    assert listed[sent.id]["state"] == "SUCCESS"


# Prometheus --------------------------------------------------------------------------------


def _per_pid(metrics_dir: Path, route: str) -> dict[int, float]:
    """Requests of `route` answered by each gunicorn worker, from gunicorn's access log."""
    counts: dict[int, float] = {}
    log = metrics_dir / "access.log"
    for line in log.read_text().splitlines() if log.exists() else ():
        pid, _method, path, _status = line.split(" ", 3)
        if path == route:
            key = int(pid.strip("<>"))
            counts[key] = counts.get(key, 0) + 1
    return counts


def _settled(
    prometheus: Prometheus, promql: str, expected: float, what: str
) -> Callable[[], float]:
    """Poll until Prometheus's value of `promql` is `expected` (it scrapes every second)."""
    seen: list[float | None] = []

    def probe() -> bool:
        seen.append(prometheus.value(promql))
        return seen[-1] is not None and abs(seen[-1] - expected) < 1e-6

    try:
        wait_for(probe, timeout=30, interval=0.25, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {promql} = {seen[-3:]}, expected {expected}") from exc
    return lambda: seen[-1] or 0.0


def test_prometheus_scrapes_what_the_stack_did(
    stack: Stack, app: Flask, mp_sandbox: MercadoPagoSandbox, token: Callable[..., str]
):
    prom, report = stack.prometheus, {}
    assert not (stack.metrics_dir / "counter_999999.db").exists()
    wait_for(
        lambda: (
            prom.value('up{job="spartan-web"}') == 1 and prom.value('up{job="spartan-flower"}') == 1
        ),
        timeout=30,
        interval=0.25,
        what="both targets up",
    )
    with app.extensions["spartan.sessions"]() as session:
        ledger_before = gauges.operations_gauges(session)
    wallets_before = ledger_before["spartan_ledger_wallet_credits"][2][0][0]
    system_before = dict(ledger_before["spartan_ledger_system_account_credits"][2])
    lag_samples_before = ledger_before["spartan_payment_credit_lag_samples"][2][0][0]

    alice = {"Authorization": f"Bearer {token(f'ops-{uuid.uuid4().hex[:8]}')}"}

    # Purchases: two approved, one rejected (the failure), all through the stack.
    def buy_and_pay(status: str) -> tuple[str, int]:
        answer = stack.call("POST", BUY, alice, json={"package_id": "credits-100"})
        assert answer.status_code == 202, answer.text
        purchase_id = answer.json()["purchase_id"]

        def preference() -> str | None:
            job = stack.call("GET", answer.json()["status_url"], alice).json()
            assert job["state"] in ("queued", "running", "succeeded"), job
            return (job.get("result") or {}).get("preference_id")

        pref = wait_for(preference, timeout=30, interval=0.1, what="the preference")
        payment = mp_sandbox.pay(pref, status=status)
        wait_status(app, purchase_id, status, timeout=30)
        return purchase_id, int(payment["id"])

    paid = [buy_and_pay("approved"), buy_and_pay("approved"), buy_and_pay("rejected")]
    # Spends: three that go through, one that asks for more than the wallet holds.
    for _ in range(3):
        assert stack.call("POST", SPEND, alice, json={"amount": 10}).status_code == 201
    assert stack.call("POST", SPEND, alice, json={"amount": 10**6}).status_code == 409
    # Balance reads, concurrent, until both gunicorn workers have served some.
    reads = 0
    while len([n for n in _per_pid(stack.metrics_dir, ME).values() if n]) < 2:
        assert reads < 400, "the balance reads never reached the second gunicorn worker"
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: stack.call("GET", ME, alice).status_code, range(16)))
        assert codes == [200] * 16
        reads += 16
    per_pid = _per_pid(stack.metrics_dir, ME)
    gunicorn_workers = {p.pid for p in psutil.Process(stack.web_pid).children()}
    assert set(per_pid) <= gunicorn_workers and len(per_pid) == 2
    report["balance reads per gunicorn worker"] = sorted(per_pid.values())

    # What MercadoPago's webhooks got as answers, by status, from the sandbox's own log.
    webhook_codes = Counter(
        str(entry["status_code"])
        for _, payment_id in paid
        for entry in mp_sandbox.webhooks(payment_id)
    )
    expected_counts = {
        f'route="{BUY}",status="202"': 3,
        f'route="{SPEND}",status="201"': 3,
        f'route="{SPEND}",status="409"': 1,
        f'route="{ME}",status="200"': reads,
        **{f'route="{WEBHOOK}",status="{code}"': n for code, n in webhook_codes.items()},
    }
    for labels, expected in expected_counts.items():
        promql = f"sum(spartan_http_requests_total{{{labels}}})"
        report[promql] = _settled(prom, promql, expected, "request counter")()

    # Ledger: two packages of 100 sold, 30 spent; parity holds.
    ledger_expect = {
        "sum(spartan_ledger_wallet_credits)": wallets_before + 200 - 30,
        'sum(spartan_ledger_system_account_credits{account="system:sales"})': (
            system_before["system:sales"] - 200
        ),
        'sum(spartan_ledger_system_account_credits{account="system:consumed"})': (
            system_before["system:consumed"] + 30
        ),
        "spartan_payment_credit_lag_samples": lag_samples_before + 2,
        "spartan:ledger_imbalance:credits": 0,
    }
    for promql, expected in ledger_expect.items():
        report[promql] = _settled(prom, promql, expected, "ledger series")()
    lag = {
        stat: prom.value(f'spartan_payment_credit_lag_seconds{{stat="{stat}"}}')
        for stat in ("p50", "p95", "max")
    }
    assert lag["max"] is not None and 0 <= lag["p50"] <= lag["p95"] <= lag["max"] < 30
    report["spartan_payment_credit_lag_seconds"] = lag

    # Workers: this one's heartbeat is fresh; beat's, sent here, too. Waiting for this very
    # heartbeat also empties `maintenance` before the worker stops below: a message the worker
    # had prefetched but not run would go back to the queue and be counted there.
    sent_at = time.time()
    stack.deployment.beat({"maintenance.beat_heartbeat": {}})
    report["spartan:workers_alive:count"] = _settled(
        prom, "spartan:workers_alive:count", 1, "one live worker"
    )()

    def fresh_beat_age() -> float | None:
        stamp = prom.value("spartan_beat_heartbeat_timestamp_seconds")
        return time.time() - stamp if stamp is not None and stamp >= sent_at else None

    age = wait_for(fresh_beat_age, timeout=30, interval=0.25, what="this beat heartbeat")
    assert 0 <= age < 30
    report["beat heartbeat age (s)"] = round(age, 1)
    assert prom.value(f'flower_worker_online{{worker="{stack.worker_node}"}}') == 1

    # Queue depths: the worker stops, three tasks wait in `maintenance`, none elsewhere.
    stack.deployment.stack.stop(stack.deployment.workers.pop("ops"))
    for _ in range(3):
        stack.deployment.beat({"maintenance.beat_heartbeat": {}})
    for queue, expected in (
        ("maintenance", 3),
        ("payments", 0),
        ("media", 0),
        ("notifications", 0),
    ):
        promql = f'spartan_queue_depth{{queue="{queue}"}}'
        report[promql] = _settled(prom, promql, expected, f"{queue} depth")()
    waited = 'spartan_queue_oldest_message_age_seconds{queue="maintenance"}'
    report[waited] = wait_for(lambda: prom.value(waited), timeout=30, interval=0.25, what=waited)

    # Every metric the alert rules read is one /metrics really serves.
    missing = metric_names_in_rules() - prom.names()
    assert not missing, f"alert rules name series Prometheus never scraped: {missing}"
    groups = {g["name"]: g for g in prom.rule_groups()}
    assert {r["health"] for g in groups.values() for r in g["rules"]} == {"ok"}

    print("\nPrometheus answered (one run):")
    for promql, value in report.items():
        print(f"  {promql} = {value}")
