"""Settlement steps with the real worker: each commits once (its step record included), the
refund step exists only when a refund is due, and MercadoPago calls share one HTTP session."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from sqlalchemy import select

from market.models import Job, JobStep, Purchase
from market.models.base import utcnow
from market.payments.mercadopago.client import MercadoPagoGateway
from tests.support.mercadopago import buy, wait_status
from tests.support.poll import wait_for
from tests.support.round_trips import per_task
from workers import runtime

pytestmark = pytest.mark.usefixtures("worker")


def _settlement(app: Flask, payment_id: int) -> Job | None:
    """The payment's first settlement job once it is finished, with its steps (a refund
    made at MercadoPago sends a webhook of its own, which starts another)."""
    with app.extensions["spartan.sessions"]() as session:
        job = (
            session.execute(
                select(Job)
                .where(Job.subject == f"mercadopago-payment:{payment_id}")
                .order_by(Job.created_at)
            )
            .scalars()
            .first()
        )
        if job is None or job.state not in ("succeeded", "failed", "cancelled"):
            return None
        job.steps  # noqa: B018  (loaded while the session is open)
        return job


def _steps(job: Job) -> dict[str, JobStep]:
    return {step.name: step for step in job.steps}


def _settlement_of_recorded(session, payment_id: int):
    """A settlement job of a payment already recorded (no fetch step), not sent."""
    from market import jobs
    from workflows.settlement import settlement_steps

    return jobs.create_job(
        session,
        kind="credits.settlement",
        owner_id=None,
        subject=f"mercadopago-payment:{payment_id}",
        steps=settlement_steps(payment_id, fetched=True),
    )


def test_each_settlement_step_commits_once(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    engine = runtime.session_factory().kw["bind"]
    with per_task(engine) as trips:
        payment = mp_sandbox.pay(checkout["preference_id"])
        wait_status(app, checkout["purchase_id"], "approved")
        job = wait_for(lambda: _settlement(app, payment["id"]), what="settlement finished")
    assert job.state == "succeeded"
    steps = _steps(job)
    # No refund is due: the chain is the two steps, and no notify step (apply sent it).
    assert list(steps) == ["fetch_payment", "apply_payment"]
    for name in ("fetch_payment", "apply_payment"):
        task_id = steps[name].task_id
        assert trips.commits[task_id] == 1, (name, trips.statements[task_id])
        assert steps[name].state == "succeeded" and steps[name].attempts == 1
        assert steps[name].started_at <= steps[name].finished_at
    # Its bookkeeping is four statements inside that transaction: lock the job, read its
    # steps, update the step and the job. fetch_payment reads its step once more before
    # calling MercadoPago, outside any transaction (no commit), so a resent or redelivered
    # step skips the call. The rest is the step's own work (apply: a first purchase also
    # opens the buyer's ledger account).
    fetch = trips.statements[steps["fetch_payment"].task_id]
    apply = trips.statements[steps["apply_payment"].task_id]
    assert len([s for s in fetch if _touches_jobs(s)]) == 5, fetch
    assert len([s for s in apply if _touches_jobs(s)]) == 4, apply
    assert len(fetch) == 7, fetch
    assert len(apply) <= 18, apply


def _touches_jobs(statement: str) -> bool:
    first = statement.split("\n", 1)[0]
    return first.startswith(
        ("SELECT jobs.", "SELECT job_steps.", "UPDATE jobs ", "UPDATE job_steps ")
    )


def test_the_refund_step_is_added_only_when_a_refund_is_due_and_runs_once(
    app, client, alice, mp_sandbox
):
    from workflows.sweeps import expire_purchases

    checkout = buy(client, alice)
    with app.extensions["spartan.sessions"]() as session:
        session.get(Purchase, uuid.UUID(checkout["purchase_id"])).expires_at = utcnow()
        session.commit()
    assert expire_purchases()["expired"] >= 1
    engine = runtime.session_factory().kw["bind"]
    with per_task(engine) as trips:
        payment = mp_sandbox.pay(checkout["preference_id"])
        wait_for(lambda: mp_sandbox.payment(payment["id"])["status"] == "refunded", what="refund")
        job = wait_for(lambda: _settlement(app, payment["id"]), what="settlement finished")
    assert job.state == "succeeded", job.error_detail
    steps = _steps(job)
    assert list(steps) == ["fetch_payment", "apply_payment", "refund_payment"]
    assert job.result["effect"] == "refund_requested"
    assert job.result["refund_status"] == "succeeded"
    refund = steps["refund_payment"]
    assert refund.state == "succeeded" and refund.attempts == 1
    assert len(mp_sandbox.payment(payment["id"])["refunds"]) == 1
    assert trips.commits[steps["apply_payment"].task_id] == 1
    # The refund step reads its refund before calling MercadoPago in a transaction that writes
    # nothing (the job cannot be cancelled once apply_payment moved money); it writes once.
    assert trips.writing_commits[refund.task_id] == 1
    assert trips.commits[refund.task_id] == 2
    assert wait_status(app, checkout["purchase_id"], "expired")


def test_a_redelivered_apply_payment_sends_the_refund_step_it_had_added(
    app, client, alice, mp_sandbox
):
    """The worker died after apply_payment committed (refund step added) but before it sent
    the step: the redelivered message finds its step done and sends the refund anyway."""
    from workers.payments import apply_payment, fetch_payment
    from workflows.sweeps import expire_purchases

    checkout = buy(client, alice)
    with app.extensions["spartan.sessions"]() as session:
        session.get(Purchase, uuid.UUID(checkout["purchase_id"])).expires_at = utcnow()
        session.commit()
    assert expire_purchases()["expired"] >= 1
    payment = mp_sandbox.pay(checkout["preference_id"], webhook="withhold")
    fetch_payment(payment_id=str(payment["id"]))  # called directly: recorded, not applied
    with app.extensions["spartan.sessions"]() as session:
        job = _settlement_of_recorded(session, payment["id"])
        session.commit()
        job_id, apply_id = job.id, job.steps[0].task_id
    # The first delivery as the worker runs it, but nothing sends what it adds to its chain
    # (a worker that died right after the commit).
    apply_payment.push_request(id=apply_id, is_eager=False, chain=None)
    try:
        assert apply_payment(payment_id=str(payment["id"]))["effect"] == "refund_requested"
        [unsent] = apply_payment.request.chain
    finally:
        apply_payment.pop_request()
    added = _step_named(app, job_id, "refund_payment")
    assert added is not None and added.state == "pending"
    assert unsent["options"]["task_id"] == added.task_id
    assert mp_sandbox.payment(payment["id"])["refunds"] == []
    # The redelivery goes through the real worker: apply is a no-op, the refund step runs.
    apply_payment.apply_async(kwargs={"payment_id": str(payment["id"])}, task_id=apply_id)
    wait_for(lambda: mp_sandbox.payment(payment["id"])["status"] == "refunded", what="refund")
    done = wait_for(lambda: _settlement(app, payment["id"]), what="settlement finished")
    assert done.state == "succeeded"
    assert [s.state for s in done.steps] == ["succeeded", "succeeded"]
    assert len(mp_sandbox.payment(payment["id"])["refunds"]) == 1


def _step_named(app: Flask, job_id: uuid.UUID, name: str) -> JobStep | None:
    with app.extensions["spartan.sessions"]() as session:
        step = session.execute(
            select(JobStep).where(JobStep.job_id == job_id, JobStep.name == name)
        ).scalar_one_or_none()
        return step


def test_mercadopago_calls_share_one_http_session_and_connection(mp_sandbox, settings):
    from market.payments.mercadopago import sdk

    first = MercadoPagoGateway(settings.mercadopago_access_token, api_base_url=mp_sandbox.url)
    second = MercadoPagoGateway(settings.mercadopago_access_token, api_base_url=mp_sandbox.url)
    first.ping()
    session = sdk.session_for(0, [], None)  # the gateway's retry settings: none of the SDK's
    # This sandbox's pool (the process's session also holds those of earlier tests' sandboxes).
    pool = session.get_adapter(mp_sandbox.url).poolmanager.connection_from_url(mp_sandbox.url)
    opened = pool.num_connections
    for gateway in (first, second, first):
        assert gateway.search_payments(external_reference=f"none-{uuid.uuid4()}") == []
    assert first.ping() and second.ping()
    # Five more calls through two gateways: the same session, and not one new connection.
    assert sdk.session_for(0, [], None) is session
    assert pool.num_connections == opened


def test_a_cancelled_settlement_applies_nothing_when_its_step_arrives(
    app, client, alice, mp_sandbox
):
    """A cancel committed before apply_payment locks its job wins: the step does nothing
    (its money never moves) and the job stays cancelled."""
    from market import jobs
    from tests.support.mercadopago import balance, purchase_row
    from workers.payments import apply_payment, fetch_payment

    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"], webhook="withhold")
    fetch_payment(payment_id=str(payment["id"]))  # called directly: recorded, not applied
    with app.extensions["spartan.sessions"]() as session:
        job = _settlement_of_recorded(session, payment["id"])
        jobs.cancel_job(session, job)
        session.commit()
        job_id, apply_id = job.id, job.steps[0].task_id
    # The message of the step arrives anyway (sent before the cancel, say).
    with per_task(runtime.session_factory().kw["bind"]) as trips:
        apply_payment.apply_async(kwargs={"payment_id": str(payment["id"])}, task_id=apply_id)
        wait_for(lambda: apply_id in trips.finished, what="the step run by the worker")
    assert trips.writing_commits.get(apply_id, 0) == 0
    assert _step_named(app, job_id, "apply_payment").state == "cancelled"
    assert purchase_row(app, checkout["purchase_id"]).status == "pending"
    assert balance(client, alice) == 0
