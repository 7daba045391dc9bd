"""The state machines of purchases and refunds, walked table by table (no database)."""

from __future__ import annotations

import uuid

import pytest

from market.models import PaymentRefund, Purchase
from market.models.credits import PURCHASE_STATES
from market.models.payments import REFUND_STATES
from market.payments import states
from market.payments.states import (
    PURCHASE_TRANSITIONS,
    REFUND_TRANSITIONS,
    IllegalTransitionError,
)


class Recorder:
    """Stands in for a Session: move_purchase only adds the transition row to it."""

    def __init__(self) -> None:
        self.added: list[object] = []

    def add(self, row: object) -> None:
        self.added.append(row)


def purchase(status: str) -> Purchase:
    return Purchase(id=uuid.uuid4(), status=status, credits=100)


ALL_PURCHASE_MOVES = [(a, b) for a in PURCHASE_STATES for b in PURCHASE_STATES]
ALL_REFUND_MOVES = [(a, b) for a in REFUND_STATES for b in REFUND_STATES]


def test_the_tables_name_exactly_the_states_the_database_allows():
    assert set(PURCHASE_TRANSITIONS) - {None} == set(PURCHASE_STATES)
    assert set().union(*PURCHASE_TRANSITIONS.values()) <= set(PURCHASE_STATES)
    assert set(REFUND_TRANSITIONS) == set(REFUND_STATES)
    assert set().union(*REFUND_TRANSITIONS.values()) <= set(REFUND_STATES)


@pytest.mark.parametrize(("current", "to"), ALL_PURCHASE_MOVES)
def test_every_purchase_move_is_allowed_by_the_table_or_raises(current, to):
    session, row = Recorder(), purchase(current)
    if to in PURCHASE_TRANSITIONS[current]:
        states.move_purchase(session, row, to, reason="test", payment_id=7)  # type: ignore[arg-type]
        assert row.status == to
        [transition] = session.added
        assert (transition.from_status, transition.to_status) == (current, to)
        assert (transition.reason, transition.payment_id) == ("test", 7)
    else:
        with pytest.raises(IllegalTransitionError):
            states.move_purchase(session, row, to, reason="test")  # type: ignore[arg-type]
        assert row.status == current and session.added == []


@pytest.mark.parametrize(("current", "to"), ALL_REFUND_MOVES)
def test_every_refund_move_is_allowed_by_the_table_or_raises(current, to):
    refund = PaymentRefund(id=uuid.uuid4(), status=current)
    if to in REFUND_TRANSITIONS[current]:
        states.move_refund(refund, to, error="why" if to == "failed" else None)
        assert refund.status == to
        assert refund.error == ("why" if to == "failed" else None)
    else:
        with pytest.raises(IllegalTransitionError):
            states.move_refund(refund, to)
        assert refund.status == current


def test_terminal_states_go_nowhere():
    assert {s for s, nxt in PURCHASE_TRANSITIONS.items() if not nxt} == {
        "cancelled",
        "expired",
        "refunded",
    }
    assert {s for s, nxt in REFUND_TRANSITIONS.items() if not nxt} == {"succeeded", "failed"}


def test_every_purchase_state_is_reachable_from_creation():
    seen, frontier = set(), {None}
    while frontier:
        current = frontier.pop()
        for nxt in PURCHASE_TRANSITIONS[current]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.add(nxt)
    assert seen == set(PURCHASE_STATES)


def test_moves_stamp_the_purchase_times():
    session, row = Recorder(), purchase("pending")
    states.move_purchase(session, row, "approved", reason="payment_approved")  # type: ignore[arg-type]
    assert row.approved_at is not None and row.settled_at is not None
    approved_at = row.approved_at
    states.move_purchase(session, row, "charged_back", reason="x", detail="settled")  # type: ignore[arg-type]
    assert row.reversed_at is not None and row.status_detail == "settled"
    states.move_purchase(session, row, "approved", reason="chargeback_reimbursed")  # type: ignore[arg-type]
    assert row.approved_at == approved_at  # the first approval's time stays
