"""Settlement and refunds on their own: the domain functions against the run's PostgreSQL,
each step in its own committed transaction as a worker runs it (no worker, no sandbox).

Payments are MercadoPago's answers written here, in the shape GET /v1/payments/{id} has.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from market import ledger
from market.models import LedgerTransaction, Purchase
from market.models.base import utcnow
from market.payments import refunds, reversals, settlement, states
from market.payments.purchases import create_purchase

_IDS = itertools.count(8_000_000_000_000 + uuid.uuid4().int % 10**9 * 1000)
_CLOCK = itertools.count(1)


@pytest.fixture()
def world(app, make_user, user_id_of) -> Iterator[World]:
    yield World(app.extensions["spartan.sessions"], user_id_of(make_user()))


class World:
    """One buyer, their purchases, and MercadoPago's answers applied as a worker would."""

    def __init__(self, sessions: Callable[[], Session], user_id: uuid.UUID) -> None:
        self.sessions, self.user_id = sessions, user_id

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def purchase(self, package_id: str = "credits-100") -> Purchase:
        with self.transaction() as session:
            made = create_purchase(
                session, user_id=self.user_id, package_id=package_id, ttl_minutes=60
            )
        return made

    def settle(self, purchase: Purchase, payment_id: int, status: str, **changes: Any):
        answer = {
            "id": payment_id,
            "status": status,
            "status_detail": "accredited" if status == "approved" else status,
            "external_reference": purchase.external_reference,
            "transaction_amount": str(purchase.amount),
            "currency_id": purchase.currency,
            # Every answer is newer than the one before, as MercadoPago's dates are.
            "date_last_updated": (utcnow() + timedelta(seconds=next(_CLOCK))).isoformat(),
            **changes,
        }
        with self.transaction() as session:
            settlement.record_payment(session, answer)
            return settlement.apply_payment(session, payment_id=payment_id)

    def row(self, purchase: Purchase) -> Purchase:
        with self.sessions() as session:
            return session.get(Purchase, purchase.id)

    def balance(self) -> int:
        with self.sessions() as session:
            return ledger.balance(session, self.user_id)

    def movements(self, purchase: Purchase) -> list[tuple[str, int]]:
        with self.sessions() as session:
            rows = session.execute(
                select(LedgerTransaction.kind, LedgerTransaction.user_delta)
                .where(LedgerTransaction.purchase_id == purchase.id)
                .order_by(LedgerTransaction.created_at)
            ).all()
        return [(r.kind, r.user_delta) for r in rows]

    def timeline(self, purchase: Purchase) -> list[tuple[str | None, str, str]]:
        with self.sessions() as session:
            return [
                (t.from_status, t.to_status, t.reason)
                for t in states.timeline(session, purchase.id)
            ]

    def refund(self, payment_id: int):
        with self.sessions() as session:
            return refunds.refund_of(session, payment_id)


# Crediting -----------------------------------------------------------------------------------


def test_an_approved_payment_credits_once_and_records_the_timeline(world):
    purchase, pid = world.purchase(), next(_IDS)
    assert world.settle(purchase, pid, "approved").effect == "credited"
    assert world.settle(purchase, pid, "approved").effect == "already_credited"
    assert world.balance() == 100
    assert world.timeline(purchase) == [
        (None, "pending", "created"),
        ("pending", "approved", "payment_approved"),
    ]


def test_a_rejected_card_then_another_card_approved(world):
    purchase = world.purchase()
    assert world.settle(purchase, next(_IDS), "rejected").effect == "failed"
    assert world.settle(purchase, next(_IDS), "rejected").effect == "failed"  # another try
    assert world.settle(purchase, next(_IDS), "approved").effect == "credited"
    assert [t[1] for t in world.timeline(purchase)] == ["pending", "rejected", "approved"]


@pytest.mark.parametrize(
    "changes",
    [
        {"currency_id": None},
        {"currency_id": "USD"},
        {"currency_id": "ars"},
        {"transaction_amount": "9.99"},
    ],
    ids=["no-currency", "other-currency", "lower-case-currency", "other-amount"],
)
def test_a_payment_not_exactly_the_purchase_is_refunded_never_credited(world, changes):
    """Issue 15 item 5: the currency must be present and the same, as must the amount."""
    purchase, pid = world.purchase(), next(_IDS)
    outcome = world.settle(purchase, pid, "approved", **changes)
    assert outcome.effect == "refund_requested"
    assert world.balance() == 0 and world.row(purchase).status == "pending"
    refund = world.refund(pid)
    assert (refund.reason, refund.status, refund.credits) == ("amount_mismatch", "requested", 0)
    # Until the refund is done, a repeat names the same refund to execute (once).
    again = world.settle(purchase, pid, "approved", **changes)
    assert (again.effect, again.refund_id) == ("refund_requested", outcome.refund_id)
    world.settle(purchase, pid, "refunded", **changes)
    assert world.refund(pid).status == "succeeded"
    assert world.settle(purchase, pid, "approved", **changes).effect == "already_refunded"
    assert world.balance() == 0 and world.movements(purchase) == []


def test_a_second_payment_of_a_paid_purchase_is_refunded(world):
    purchase = world.purchase()
    world.settle(purchase, next(_IDS), "approved")
    second = next(_IDS)
    assert world.settle(purchase, second, "approved").effect == "refund_requested"
    assert world.refund(second).reason == "already_paid" and world.balance() == 100
    # MercadoPago refunds it: the automatic refund is done, the purchase untouched.
    world.settle(purchase, second, "refunded")
    assert world.refund(second).status == "succeeded"
    assert world.row(purchase).status == "approved" and world.balance() == 100


def test_an_older_answer_never_replaces_a_newer_one(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    stale = (utcnow() - timedelta(days=1)).isoformat()
    assert world.settle(purchase, pid, "pending", date_last_updated=stale).effect == (
        "already_credited"
    )


# Reversals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refunded", "credits"),
    [("0.05", 0), ("2.57", 25), ("9.99", 99), ("10.00", 100), ("10.01", 100)],
)
def test_partial_refunds_take_credits_in_proportion_rounded_down(refunded, credits):
    purchase = Purchase(credits=100, amount=Decimal("10.00"))
    assert reversals.credits_for_refund(purchase, Decimal(refunded)) == credits


def test_partial_refunds_move_step_by_step_to_refunded(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    partial = {"status_detail": "partially_refunded", "transaction_amount_refunded": 2.57}
    assert world.settle(purchase, pid, "approved", **partial).effect == "partially_reversed"
    assert world.settle(purchase, pid, "approved", **partial).effect == "already_reversed"
    assert world.balance() == 75
    more = {"status_detail": "partially_refunded", "transaction_amount_refunded": 5.00}
    world.settle(purchase, pid, "approved", **more)
    assert world.balance() == 50 and world.row(purchase).refunded_credits == 50
    world.settle(purchase, pid, "refunded", transaction_amount_refunded=10.00)
    assert world.balance() == 0 and world.row(purchase).status == "refunded"
    assert world.movements(purchase) == [
        ("sale", 100),
        ("refund", -25),
        ("refund", -25),
        ("refund", -50),
    ]


def test_a_chargeback_reimbursed_gives_back_what_it_took_once(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    with world.transaction() as session:
        ledger.spend(session, user_id=world.user_id, amount=40, description=None)
    world.settle(purchase, pid, "charged_back", status_detail="in_process")
    assert world.balance() == 0 and world.row(purchase).unrecovered_credits == 40
    assert world.settle(purchase, pid, "charged_back", status_detail="settled").effect == (
        "ignored"
    )
    assert world.settle(purchase, pid, "charged_back", status_detail="reimbursed").effect == (
        "restored"
    )
    assert world.settle(purchase, pid, "charged_back", status_detail="reimbursed").effect == (
        "ignored"
    )
    row = world.row(purchase)
    assert (row.status, row.unrecovered_credits, world.balance()) == ("approved", 0, 60)
    assert [t[1] for t in world.timeline(purchase)] == [
        "pending",
        "approved",
        "charged_back",
        "approved",
    ]


def test_a_chargeback_reimbursed_before_we_saw_it_moves_nothing(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    outcome = world.settle(purchase, pid, "charged_back", status_detail="reimbursed")
    assert outcome.effect == "ignored" and world.balance() == 100
    assert world.movements(purchase) == [("sale", 100)]


# Refunds -------------------------------------------------------------------------------------


def _admin_refund(world, purchase) -> uuid.UUID:
    with world.transaction() as session:
        return refunds.request_refund(session, purchase_id=purchase.id, requested_by=None).id


def test_a_refund_in_process_then_approved_is_final_only_then(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    refund_id = _admin_refund(world, purchase)
    assert world.balance() == 0  # taken when asked for
    with world.transaction() as session:
        outcome = refunds.record_answer(
            session, refund_id=refund_id, provider_refund_id="r-1", status="in_process"
        )
    assert outcome.effect == "refund_in_process"
    assert (world.refund(pid).status, world.row(purchase).status) == ("in_process", "approved")
    # Asking again returns the refund in flight.
    assert _admin_refund(world, purchase) == refund_id
    world.settle(purchase, pid, "refunded", refunds=[{"id": "r-1", "status": "approved"}])
    assert (world.refund(pid).status, world.row(purchase).status) == ("succeeded", "refunded")
    assert world.balance() == 0
    assert world.movements(purchase) == [("sale", 100), ("refund", -100)]


def test_a_refund_in_process_then_rejected_gives_the_credits_back(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    refund_id = _admin_refund(world, purchase)
    with world.transaction() as session:
        refunds.record_answer(
            session, refund_id=refund_id, provider_refund_id="r-2", status="in_process"
        )
    rejected = {"refunds": [{"id": "r-2", "status": "rejected"}]}
    assert world.settle(purchase, pid, "approved", **rejected).effect == "refund_failed"
    assert world.settle(purchase, pid, "approved", **rejected).effect == "already_credited"
    assert (world.refund(pid).status, world.balance()) == ("failed", 100)
    assert world.row(purchase).status == "approved"


def test_a_refund_refused_at_once_gives_the_credits_back_once(world):
    purchase, pid = world.purchase(), next(_IDS)
    world.settle(purchase, pid, "approved")
    refund_id = _admin_refund(world, purchase)
    for _ in range(2):
        with world.transaction() as session:
            refunds.fail_refund(session, refund_id=refund_id, error="no", payment_status="approved")
    assert (world.refund(pid).status, world.balance()) == ("failed", 100)
    assert world.movements(purchase) == [("sale", 100), ("refund", -100), ("refund_void", 100)]
