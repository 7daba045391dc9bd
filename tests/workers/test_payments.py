"""Every payments task, and the credits maintenance tasks, run twice: the effect happens once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from market import ledger
from market.models import LedgerTransaction, PaymentEvent
from market.models.base import utcnow
from market.payments import refunds
from tests.support.mercadopago import balance, buy, purchase_row
from tests.support.poll import wait_for
from workers import payments
from workers.maintenance import ledger as ledger_tasks
from workflows import sweeps

pytestmark = pytest.mark.usefixtures("worker")


def test_payment_tasks_run_twice_take_effect_once(app, client, alice, user_id_of, mp_sandbox, db):
    checkout = buy(client, alice)
    purchase_id = checkout["purchase_id"]
    again = [payments.create_preference(purchase_id=purchase_id) for _ in range(2)]
    assert {a["preference_id"] for a in again} == {checkout["preference_id"]}
    assert len(mp_sandbox.app.extensions["mercadopago_sandbox"].preferences) >= 1

    payment = mp_sandbox.pay(checkout["preference_id"], webhook="withhold")
    pid = str(payment["id"])
    for _ in range(2):
        assert payments.fetch_payment(payment_id=pid)["payment_status"] == "approved"
    effects = [payments.apply_payment(payment_id=pid)["effect"] for _ in range(2)]
    assert effects == ["credited", "already_credited"]
    assert payments.refund_payment(payment_id=pid) == {"refund": None}
    assert balance(client, alice) == 100

    with app.extensions["spartan.sessions"]() as session:
        refund = refunds.request_refund(
            session, purchase_id=uuid.UUID(purchase_id), requested_by=None
        )
        again_refund = refunds.request_refund(
            session, purchase_id=uuid.UUID(purchase_id), requested_by=None
        )
        assert again_refund.id == refund.id
        session.commit()
    # Called directly, not through the API: read the wallet, not the cached balance.
    assert ledger.balance(db, user_id_of(alice)) == 0
    first = payments.refund_payment(refund_id=str(refund.id))
    second = payments.refund_payment(refund_id=str(refund.id))
    assert (first["refund_status"], second) == ("succeeded", {"refund": None})
    assert len(mp_sandbox.payment(payment["id"])["refunds"]) == 1
    assert purchase_row(app, purchase_id).status == "refunded"
    # MercadoPago's refunded status, applied later, reverses nothing more.
    payments.fetch_payment(payment_id=pid)
    payments.apply_payment(payment_id=pid)
    assert ledger.balance(db, user_id_of(alice)) == 0
    reversals = db.execute(
        select(func.count())
        .select_from(LedgerTransaction)
        .where(LedgerTransaction.purchase_id == uuid.UUID(purchase_id))
    ).scalar_one()
    assert reversals == 2  # the sale and one reversal


def test_requeue_processes_a_stale_payment_event_once(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"], webhook="withhold")
    with app.extensions["spartan.sessions"]() as session:
        row = PaymentEvent(
            dedupe_key=f"test:{uuid.uuid4()}",
            type="payment",
            data_id=str(payment["id"]),
            payment_id=payment["id"],
            received_at=utcnow() - timedelta(hours=1),
        )
        session.add(row)
        session.commit()
        row_id = row.id
    first = sweeps.requeue_payment_events(older_than_s=60)
    second = sweeps.requeue_payment_events(older_than_s=60)
    assert first["requeued"] >= 1 and second["requeued"] == 0

    def processed():
        with app.extensions["spartan.sessions"]() as session:
            return session.get(PaymentEvent, row_id).processed_at is not None

    wait_for(processed, what="the event processed by its settlement job")
    assert balance(client, alice) == 100


def test_ledger_check_twice_reports_no_drift(db):
    for _ in range(2):
        report = ledger_tasks.check_ledger()
        assert report["drift"] == report["unbalanced_transactions"] == 0
        assert report["grand_total"] == 0
    assert ledger.check_parity(db)["negative"] == 0
