"""Fault 4: MercadoPago misbehaves (the sandbox's chaos mode: random 500s, calls that hang
past the client's timeout, slow answers) while a burst of purchases settles.

Promise: every purchase is credited exactly once; failed calls are retried with backoff and a
bound (StepTask: at most 1 + max_retries runs of a step), and what a chain gave up on the
inbox sweeper and reconciliation settle once MercadoPago answers again.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from market.models import Job, JobStep
from tests.reliability.burst import (
    approved,
    assert_credited_once,
    inbox_rows,
    make_users,
    pay,
    prepare,
)
from tests.reliability.stack import settle_with_beat
from workers.base import StepTask
from workflows.settlement import KIND as SETTLEMENT

pytestmark = pytest.mark.slow

BURST = 30
CLIENT_TIMEOUT_S = 1.0
CHAOS = {
    "error_rate": 0.25,
    "error_status": 500,
    "timeout_rate": 0.05,
    "hang_s": CLIENT_TIMEOUT_S + 1,
    "delay_ms": 50,
    "seed": 8,
}


def settlement_subjects(burst) -> list[str]:
    return [f"mercadopago-payment:{p.payment_id}" for p in burst]


def step_runs(sessions, burst) -> dict[str, int]:
    """Runs per settlement step of the burst's jobs: the most, and how many steps retried."""
    subjects = settlement_subjects(burst)
    with sessions() as session:
        most, retried = session.execute(
            select(func.max(JobStep.attempts), func.count().filter(JobStep.attempts > 1))
            .join(Job, Job.id == JobStep.job_id)
            .where(Job.kind == SETTLEMENT, Job.subject.in_(subjects))
        ).one()
    return {"most": int(most or 0), "retried": int(retried)}


def job_states(sessions, burst) -> Counter[str]:
    """The burst's settlement jobs by state."""
    subjects = settlement_subjects(burst)
    with sessions() as session:
        return Counter(
            session.execute(select(Job.state).where(Job.subject.in_(subjects))).scalars()
        )


def settlement_jobs_finished(sessions, burst) -> bool:
    """Whether every payment of the burst has a settlement job and all of them have ended
    (succeeded, or failed once their retries ran out: the bound). A chain that gave up is
    followed by a sweep's new job of the same payment."""
    subjects = settlement_subjects(burst)
    with sessions() as session:
        rows = session.execute(
            select(Job.subject, Job.state).where(Job.subject.in_(subjects))
        ).all()
    return {subject for subject, _ in rows} == set(subjects) and all(
        state in ("succeeded", "failed") for _, state in rows
    )


def test_provider_chaos_settles_every_purchase_once_with_bounded_retries(
    fault_db, settings, deploy, fault_sandbox
):
    sessions, mp_sandbox = fault_db.sessions, fault_sandbox
    started = time.monotonic()
    deployment = deploy("chaos", MERCADOPAGO_TIMEOUT_S=str(CLIENT_TIMEOUT_S)).start("worker")
    burst = prepare(
        sessions,
        settings,
        mp_sandbox,
        users=make_users(sessions, 5),
        n=BURST,
        webhook_url=deployment.webhook_url,
    )
    mp_sandbox.chaos(**CHAOS)
    try:
        burst = pay(mp_sandbox, burst)
        rounds = settle_with_beat(
            deployment,
            # Chaos lasts until every chain has ended, so each fetch_payment step met it.
            lambda: (
                approved(sessions, burst) == BURST and settlement_jobs_finished(sessions, burst)
            ),
            timeout=150,
            every_s=5,
            what="every purchase credited under chaos",
            describe=lambda: (
                f"approved {approved(sessions, burst)}/{BURST}, "
                f"jobs {dict(job_states(sessions, burst))}, steps {step_runs(sessions, burst)}"
            ),
        )
    finally:
        mp_sandbox.chaos()
    settled = time.monotonic()
    assert_credited_once(sessions, burst)
    runs = step_runs(sessions, burst)
    assert runs["retried"] > 0, "chaos made some provider calls fail and their steps retry"
    assert runs["most"] <= 1 + StepTask.max_retries, "retries are bounded"
    print(
        f"\nprovider chaos {CHAOS}: steps retried={runs['retried']}, most runs of one step="
        f"{runs['most']} (bound {1 + StepTask.max_retries}), beat rounds={rounds}, "
        f"inbox={inbox_rows(sessions, burst)}, seconds to settle {settled - started:.1f}"
    )
