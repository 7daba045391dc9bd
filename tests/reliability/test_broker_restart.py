"""Fault 2: the broker (a Redis without persistence) restarts mid-burst; its queues are lost.

Promise: every message queued at that moment is gone, yet every purchase is credited, none
twice: the inbox keeps every notification the web app accepted, and beat's inbox sweeper,
stale-job resend and reconciliation with MercadoPago settle them.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.reliability.burst import (
    approved,
    assert_credited_once,
    fetched,
    inbox_rows,
    make_users,
    pay,
    prepare,
)
from tests.reliability.stack import settle_with_beat
from tests.support.poll import wait_for

pytestmark = pytest.mark.slow

BURST = 100


def queued_messages(url: str, queue_prefix: str) -> int:
    """Messages waiting in the deployment's payments queue (kombu: a list per queue)."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return int(client.llen(f"{queue_prefix}{queue_prefix}payments"))
    finally:
        client.close()


def test_a_broker_restart_mid_burst_loses_messages_but_no_purchase(
    private_redis, fault_db, settings, deploy, fault_sandbox
):
    sessions, mp_sandbox = fault_db.sessions, fault_sandbox
    started = time.monotonic()
    deployment = deploy(
        "broker", CELERY_BROKER_URL=private_redis.url, CELERY_RESULT_BACKEND=private_redis.url
    ).start("worker")
    burst = prepare(
        sessions,
        settings,
        mp_sandbox,
        users=make_users(sessions, 10),
        n=BURST,
        webhook_url=deployment.webhook_url,
    )
    up = time.monotonic()
    burst = pay(mp_sandbox, burst)
    wait_for(
        lambda: (
            fetched(sessions, burst) >= BURST // 10
            and queued_messages(private_redis.url, deployment.queue_prefix) > 0
        ),
        timeout=60,
        what="settlements under way with messages still queued",
    )
    lost = queued_messages(private_redis.url, deployment.queue_prefix)
    credited_before = approved(sessions, burst)
    private_redis.kill()
    private_redis.start()
    restarted = time.monotonic()
    assert credited_before < BURST and lost > 0, "the restart must drop queued settlements"
    # Now and then kombu's Redis transport wedges a worker whose ack met the dead connection
    # (upstream: celery/celery#9054 and kin): it stops consuming and answering pings. Health's
    # worker check reports exactly that, and the process supervisor replaces it; so here.
    wedged = not deployment.responsive("worker", timeout=20)
    if wedged:
        deployment.kill_worker("worker")
        deployment.start_worker("replacement")

    rounds = settle_with_beat(
        deployment,
        lambda: (
            approved(sessions, burst) == BURST and inbox_rows(sessions, burst)["processed"] == BURST
        ),
        timeout=120,
        what="every purchase credited and every notification processed",
        describe=lambda: (
            f"approved {approved(sessions, burst)}, inbox {inbox_rows(sessions, burst)}"
        ),
    )
    settled = time.monotonic()
    report = assert_credited_once(sessions, burst)
    inbox = inbox_rows(sessions, burst)
    assert inbox["stored"] == BURST
    print(
        f"\nbroker restart: payments-queue messages lost={lost}, credited before={credited_before}"
        f"/{BURST}, worker wedged={wedged}, beat rounds={rounds}, inbox={inbox}, parity clean over "
        f"{report['accounts']} accounts; seconds: start+prepare {up - started:.1f}, "
        f"pay to restart {restarted - up:.1f}, settle {settled - restarted:.1f}"
    )
