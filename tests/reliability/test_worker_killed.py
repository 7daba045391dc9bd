"""Fault 1: the worker is killed with SIGKILL while a burst of 200 settlements is in flight.

Promise: once a new worker runs (and beat's recovery jobs with it), every purchase of the
burst is credited exactly once and the ledger balances. What the killed worker had taken but
not acknowledged (acks_late) waits for the broker's visibility timeout; the inbox sweeper
(`maintenance.requeue_payment_events`) settles those payment events long before.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from market.models import Job
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
from workflows.settlement import KIND as SETTLEMENT

pytestmark = pytest.mark.slow

BURST = 200


def unfinished_settlements(sessions, burst) -> int:
    subjects = [f"mercadopago-payment:{p.payment_id}" for p in burst]
    with sessions() as session:
        return session.execute(
            select(func.count())
            .select_from(Job)
            .where(
                Job.kind == SETTLEMENT,
                Job.subject.in_(subjects),
                Job.state.in_(("queued", "running")),
            )
        ).scalar_one()


def test_a_worker_killed_mid_burst_loses_no_purchase_and_credits_none_twice(
    fault_db, settings, deploy, fault_sandbox
):
    sessions, mp_sandbox = fault_db.sessions, fault_sandbox
    started = time.monotonic()
    deployment = deploy("kill").start("first")
    up = time.monotonic()
    burst = prepare(
        sessions,
        settings,
        mp_sandbox,
        users=make_users(sessions, 20),
        n=BURST,
        webhook_url=deployment.webhook_url,
    )
    prepared = time.monotonic()
    burst = pay(mp_sandbox, burst)

    # Each chain's later steps queue behind every first step, so fetched payments show the
    # burst under way long before the first credit.
    wait_for(
        lambda: fetched(sessions, burst) >= BURST // 10,
        timeout=90,
        what="a tenth of the burst's payments fetched",
    )
    deployment.kill_worker("first")
    killed = time.monotonic()
    credited_before = approved(sessions, burst)
    assert credited_before < BURST, "the kill must land while settlements are in flight"
    in_flight = unfinished_settlements(sessions, burst)

    deployment.start_worker("second")
    restarted = time.monotonic()
    rounds = settle_with_beat(
        deployment,
        lambda: (
            approved(sessions, burst) == BURST and inbox_rows(sessions, burst)["processed"] == BURST
        ),
        timeout=120,
        what="every purchase credited and every notification processed",
    )
    settled = time.monotonic()
    report = assert_credited_once(sessions, burst)
    inbox = inbox_rows(sessions, burst)
    assert inbox["stored"] == BURST
    print(
        f"\nworker kill: credited before kill={credited_before}/{BURST}, "
        f"unfinished settlement jobs at kill={in_flight}, beat rounds={rounds}, "
        f"inbox={inbox}, jobs left unfinished={unfinished_settlements(sessions, burst)}, "
        f"parity={report['accounts']} accounts clean; seconds: start {up - started:.1f}, "
        f"prepare {prepared - up:.1f}, pay to kill {killed - prepared:.1f}, "
        f"new worker {restarted - killed:.1f}, settle {settled - restarted:.1f}"
    )
