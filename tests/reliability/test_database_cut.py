"""Fault 3: PostgreSQL is cut off (a proxy drops every connection and refuses new ones).

Promise: while it is gone the MercadoPago webhook answers 503 (so MercadoPago retries), the
API answers 503 problem+json with Retry-After, and health reports the database down (503);
once it is back, every purchase paid before or during the outage is credited, none twice.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from sqlalchemy import select

from market.models import Job
from sandbox.mercadopago import sign
from tests.reliability.burst import (
    approved,
    assert_credited_once,
    fetched,
    inbox_rows,
    make_users,
    pay,
    prepare,
)
from tests.reliability.stack import WEBHOOK_PATH, settle_with_beat
from tests.support.poll import wait_for

HEALTH = "/api/v1/advanced/health"
ME = "/api/v1/advanced/credits/me"
HISTORY = "/api/v1/advanced/credits/transactions"
PER_PHASE = 10


def signed_webhook(secret: str, payment_id: int) -> tuple[str, dict[str, str], str]:
    """(path, headers, body) of a MercadoPago payment notification signed now."""
    request_id, ts = str(uuid.uuid4()), str(int(time.time() * 1000))
    body = {"action": "payment.updated", "data": {"id": str(payment_id)}, "type": "payment"}
    body["id"] = int(time.time() * 1000)
    headers = {
        "Content-Type": "application/json",
        "x-request-id": request_id,
        "x-signature": sign(secret, str(payment_id), request_id, ts),
    }
    return f"{WEBHOOK_PATH}?data.id={payment_id}&type=payment", headers, json.dumps(body)


def assert_unavailable(answer: requests.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert int(answer.headers["Retry-After"]) > 0
    problem = answer.json()
    assert problem["status"] == 503 and problem["title"]
    assert "psycopg" not in answer.text and "5432" not in answer.text, "no internals leak"


def job_states(sessions, burst) -> list[str]:
    subjects = [f"mercadopago-payment:{p.payment_id}" for p in burst]
    with sessions() as session:
        return list(session.execute(select(Job.state).where(Job.subject.in_(subjects))).scalars())


def answered(mp_sandbox, payment_id: int) -> set[int | None]:
    return {w["status_code"] for w in mp_sandbox.webhooks(payment_id)}


def test_the_app_answers_503_while_the_database_is_unreachable(
    app_with, settings, pg_proxy, alice, admin
):
    """The in-process app through the proxy (no worker): the three answers of an outage."""
    outage = app_with(database_url=pg_proxy.url(settings.database_url)).test_client()
    assert outage.get(ME, headers=alice).status_code == 200
    path, headers, body = signed_webhook(settings.mercadopago_webhook_secret, 1_000_000_000)
    pg_proxy.cut()
    # A balance already cached is still served (it needs no database once the caller is known).
    assert outage.get(ME, headers=alice).status_code == 200
    history = outage.get(HISTORY, headers=alice)
    for answer in (history, outage.post(path, data=body, headers=headers)):
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.mimetype == "application/problem+json"
        assert int(answer.headers["Retry-After"]) > 0
        assert answer.get_json()["status"] == 503
    health = outage.get(HEALTH, headers=admin)  # a fresh check, not the shared report
    assert health.status_code == 503
    assert health.get_json()["checks"]["database"]["status"] == "down"
    pg_proxy.restore()
    assert outage.get(ME, headers=alice).status_code == 200


@pytest.mark.slow
def test_a_database_outage_answers_503_and_settles_once_it_is_back(
    pg_proxy, fault_db, settings, deploy, fault_sandbox, alice, admin
):
    sessions, mp_sandbox = fault_db.sessions, fault_sandbox
    deployment = deploy("pgcut", DATABASE_URL=pg_proxy.url(fault_db.url)).start("worker")
    web = deployment.web_url
    assert requests.get(web + ME, headers=alice, timeout=10).status_code == 200
    burst = prepare(
        sessions,
        settings,
        mp_sandbox,
        users=make_users(sessions, 4),
        n=2 * PER_PHASE,
        webhook_url=deployment.webhook_url,
    )
    before = pay(mp_sandbox, burst[:PER_PHASE])
    # Cut while those settle: their steps meet the outage mid-chain.
    wait_for(lambda: fetched(sessions, before) >= 1, timeout=30, what="settlements under way")
    pg_proxy.cut()
    cut_at = time.monotonic()
    during = pay(mp_sandbox, burst[PER_PHASE:])
    for paid in during:
        wait_for(
            lambda paid=paid: 503 in answered(mp_sandbox, paid.payment_id),
            timeout=20,
            what=f"the sandbox's webhook for {paid.payment_id} answered 503",
        )
    path, headers, body = signed_webhook(settings.mercadopago_webhook_secret, during[0].payment_id)
    assert_unavailable(requests.post(web + path, data=body, headers=headers, timeout=10))
    # A read that needs PostgreSQL (a balance already cached may still be served).
    assert_unavailable(requests.get(web + HISTORY, headers=alice, timeout=10))
    # An admin's check is fresh (anonymous callers read a shared report up to ~10 s old).
    health = requests.get(web + HEALTH, headers=admin, timeout=15)
    assert health.status_code == 503
    assert health.json()["checks"]["database"]["status"] == "down"
    outage_s = time.monotonic() - cut_at
    pg_proxy.restore()

    wait_for(
        lambda: (
            requests.get(web + HEALTH, headers=admin, timeout=15).json()["checks"]["database"][
                "status"
            ]
            == "ok"
        ),
        timeout=30,
        interval=0.5,
        what="health reporting the database back",
    )
    assert requests.get(web + ME, headers=alice, timeout=10).status_code == 200
    burst = before + during
    rounds = settle_with_beat(
        deployment,
        lambda: approved(sessions, burst) == len(burst),
        timeout=90,
        what="every purchase credited",
    )
    assert_credited_once(sessions, burst)
    # Each chain went on after the outage (its steps retried), none was left half done.
    wait_for(
        lambda: set(job_states(sessions, burst)) == {"succeeded"},
        timeout=60,
        interval=0.5,
        what="every settlement job finished",
    )
    redelivered = sum(200 in answered(mp_sandbox, p.payment_id) for p in during)
    print(
        f"\ndatabase cut: outage {outage_s:.1f}s, webhooks answered 503 during it={len(during)}, "
        f"later accepted on the sandbox's retry={redelivered}, beat rounds={rounds}, "
        f"inbox={inbox_rows(sessions, burst)}, proxy connections={pg_proxy.connections}"
    )
