"""The ledger's guarantees, enforced by PostgreSQL: once per reference, never negative,
append-only, balanced."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from market import ledger
from market.errors import InsufficientCreditsError


@pytest.fixture()
def user_id(user_id_of, make_user) -> uuid.UUID:
    return user_id_of(make_user())


def fund(db, user_id: uuid.UUID, credits: int) -> None:
    ledger.credit_sale(db, user_id=user_id, credits=credits, reference=f"test:{uuid.uuid4()}")
    db.commit()


def test_a_reference_posts_once(db, user_id):
    reference = f"test:{uuid.uuid4()}"
    first = ledger.credit_sale(db, user_id=user_id, credits=100, reference=reference)
    again = ledger.credit_sale(db, user_id=user_id, credits=100, reference=reference)
    db.commit()
    assert first.created and not again.created
    assert first.transaction_id == again.transaction_id
    assert ledger.balance(db, user_id) == 100


def test_concurrent_posts_of_one_reference_apply_once(app, db, user_id):
    reference = f"test:{uuid.uuid4()}"
    barrier = threading.Barrier(8)
    created = []

    def post() -> None:
        with app.extensions["spartan.sessions"]() as session:
            barrier.wait()
            created.append(
                ledger.credit_sale(
                    session, user_id=user_id, credits=10, reference=reference
                ).created
            )
            session.commit()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False] * 7 + [True]
    assert ledger.balance(db, user_id) == 10


def test_spend_beyond_the_balance_is_refused(db, user_id):
    fund(db, user_id, 5)
    with pytest.raises(InsufficientCreditsError):
        ledger.spend(db, user_id=user_id, amount=6, description=None)
    db.rollback()
    _, left = ledger.spend(db, user_id=user_id, amount=5, description="all of it")
    db.commit()
    assert left == 0


def test_the_database_refuses_a_negative_wallet(db, user_id):
    fund(db, user_id, 5)
    account = ledger.wallet(db, user_id)
    with pytest.raises(IntegrityError):
        ledger.post(
            db,
            reference=f"test:{uuid.uuid4()}",
            kind="spend",
            legs=[(account.id, -6), (ledger.system_account_id(ledger.CONSUMED), 6)],
        )
        db.flush()
    db.rollback()
    assert ledger.balance(db, user_id) == 5


def test_entries_are_append_only_and_balances_follow_them(db, user_id):
    fund(db, user_id, 5)
    for statement in (
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_transactions",
        "UPDATE ledger_accounts SET balance = balance + 1",
    ):
        with pytest.raises(DBAPIError):
            db.execute(text(statement))
        db.rollback()
    assert ledger.balance(db, user_id) == 5


def test_an_unbalanced_transaction_cannot_commit(db, user_id):
    account = ledger.wallet(db, user_id)
    db.commit()
    txn = uuid.uuid4()
    db.execute(
        text("INSERT INTO ledger_transactions (id, reference, kind) VALUES (:id, :ref, 'sale')"),
        {"id": txn, "ref": f"test:{uuid.uuid4()}"},
    )
    db.execute(
        text("INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES (:t, :a, 7)"),
        {"t": txn, "a": account.id},
    )
    with pytest.raises(DBAPIError, match="does not balance"):
        db.commit()
    db.rollback()
    assert ledger.balance(db, user_id) == 0


def test_partial_reversal_takes_what_is_left(db, user_id):
    fund(db, user_id, 10)
    ledger.spend(db, user_id=user_id, amount=7, description=None)
    reference = f"test:{uuid.uuid4()}"
    with pytest.raises(InsufficientCreditsError):
        ledger.reverse(db, user_id=user_id, credits=10, reference=reference, kind="refund")
    _, taken = ledger.reverse(
        db, user_id=user_id, credits=10, reference=reference, kind="chargeback", partial=True
    )
    _, again = ledger.reverse(
        db, user_id=user_id, credits=10, reference=reference, kind="chargeback", partial=True
    )
    db.commit()
    assert (taken, again, ledger.balance(db, user_id)) == (3, 3, 0)


def test_parity_check_finds_no_drift(db, user_id):
    fund(db, user_id, 10)
    ledger.spend(db, user_id=user_id, amount=4, description=None)
    db.commit()
    report = ledger.check_parity(db)
    assert report["drift"] == report["unbalanced_transactions"] == report["negative"] == 0
    assert report["grand_total"] == 0 and report["accounts"] >= 4
