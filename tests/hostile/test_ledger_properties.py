"""Property tests of the ledger: random interleavings of the real money movements.

Each example is a fresh user and a random sequence of: settling an approved MercadoPago
payment of a purchase (a buy), spending, an admin refund (asked, then done or refused by
MercadoPago) and a chargeback. The operations are the domain's own functions
(market.payments.settlement, market.ledger, market.payments.refunds), each in its own
committed transaction as a worker or a request runs it, against the run's PostgreSQL.

After every operation: the wallet's balance is the sum of its entries and what a simple
model of the rules expects, never negative; every transaction sums to zero; an overspend is
refused and changes nothing; and the same operation replayed (same payment id, same spend
reference, same refund) changes nothing. The concurrency test runs one sequence in several
threads at once: every reference posts once, nothing deadlocks or errors, parity holds.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market import ledger
from market.errors import ConflictError, InsufficientCreditsError, MarketError
from market.models import LedgerAccount, LedgerEntry, LedgerTransaction, Purchase
from market.models.base import utcnow
from market.payments import refunds, settlement
from market.payments.purchases import create_purchase, list_packages

# MercadoPago payment ids of this module: far from the sandbox's, unique in the run.
_PAYMENT_IDS = itertools.count(7_000_000_000_000 + uuid.uuid4().int % 10**9 * 1000)

PROPERTY_SETTINGS = settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Operations; purchase indexes are taken modulo the buys made so far. Every sequence starts
# with a buy, so the refunds and chargebacks after it have something to act on.
operation = st.one_of(
    st.just(("buy",)),
    st.tuples(st.just("spend"), st.integers(1, 700)),
    st.tuples(st.just("refund"), st.integers(0, 3)),
    st.tuples(st.just("refund_done"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("chargeback"), st.integers(0, 3)),
)
operations = st.lists(operation, min_size=1, max_size=12).map(lambda ops: [("buy",), *ops])


@dataclass
class Bought:
    """A purchase settled by an approved payment, and what the model knows of it."""

    purchase_id: uuid.UUID
    payment_id: int
    credits: int
    status: str = "approved"  # approved | refunded | charged_back
    provider: str = "approved"  # the payment's status at MercadoPago
    refund: str | None = None  # requested | succeeded | failed


@dataclass
class Account:
    """One user's run of operations against the real domain functions, with the model."""

    sessions: Callable[[], Session]
    user_id: uuid.UUID
    packages: list[str]
    balance: int = 0
    bought: list[Bought] = field(default_factory=list)
    spends: int = 0

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # Operations: each returns a replay of itself (the same references) -------------------

    def buy(self) -> Callable[[], object]:
        """MercadoPago approved the payment of the next purchase: settle it."""
        package_id = self.packages[len(self.bought) % len(self.packages)]
        purchase_id = new_purchase(self.sessions, self.user_id, package_id)
        payment_id = next(_PAYMENT_IDS)
        with self.transaction() as session:
            purchase = session.get(Purchase, purchase_id)
            assert purchase is not None
            credits = purchase.credits
            payment = approved_payment(purchase, payment_id)
        bought = Bought(purchase_id, payment_id, credits)
        self._settle(payment, "credited")
        self.bought.append(bought)
        self.balance += credits
        return lambda: self._settle(payment, "already_credited")

    def spend(self, amount: int) -> Callable[[], object]:
        reference = f"spend:{self.user_id}:{self.spends}"
        self.spends += 1
        if amount > self.balance:
            with pytest.raises(InsufficientCreditsError), self.transaction() as session:
                ledger.spend(
                    session,
                    user_id=self.user_id,
                    amount=amount,
                    description=None,
                    reference=reference,
                )
            return lambda: None
        with self.transaction() as session:
            posting, left = ledger.spend(
                session,
                user_id=self.user_id,
                amount=amount,
                description=None,
                reference=reference,
            )
        assert posting.created
        self.balance -= amount
        assert left == self.balance
        return lambda: self._replay_spend(amount, reference)

    def refund(self, index: int) -> Callable[[], object]:
        """An admin asks for a refund: the credits are taken now, or it is refused."""
        if not self.bought:
            return lambda: None
        b = self.bought[index % len(self.bought)]
        expected: type[MarketError] | None = None
        if b.refund is not None:
            expected = None if b.refund == "requested" else ConflictError
        elif b.status != "approved":
            expected = ConflictError
        elif self.balance < b.credits:
            expected = InsufficientCreditsError
        if expected is not None:
            with pytest.raises(expected), self.transaction() as session:
                refunds.request_refund(session, purchase_id=b.purchase_id, requested_by=None)
            return lambda: None
        with self.transaction() as session:
            refunds.request_refund(session, purchase_id=b.purchase_id, requested_by=None)
        if b.refund is None:
            b.refund = "requested"
            self.balance -= b.credits
        return lambda: self._request_refund_again(b)

    def refund_done(self, index: int, succeeded: bool) -> Callable[[], object]:
        """MercadoPago answers the refund's request: done, or refused for good."""
        if not self.bought:
            return lambda: None
        b = self.bought[index % len(self.bought)]
        if b.refund != "requested":
            return lambda: None
        self._finish_refund(b, succeeded)
        if succeeded:
            b.refund, b.provider = "succeeded", "refunded"
            if b.status == "approved":
                b.status = "refunded"
        else:
            b.refund = "failed"
            if b.provider == "approved":
                self.balance += b.credits  # the credits taken at the request come back
        return lambda: self._finish_refund(b, succeeded)

    def chargeback(self, index: int) -> Callable[[], object]:
        """The buyer disputed the payment and MercadoPago charged it back."""
        if not self.bought:
            return lambda: None
        b = self.bought[index % len(self.bought)]
        if b.provider != "approved":
            return lambda: None  # only an approved payment can be charged back
        with self.transaction() as session:
            purchase = session.get(Purchase, b.purchase_id)
            assert purchase is not None
            payment = approved_payment(purchase, b.payment_id, status="charged_back")
        self._settle(payment, None)
        b.provider = "charged_back"
        if b.status == "approved":
            if b.refund not in ("requested", "succeeded"):
                # The money is gone: take back what the wallet still holds.
                self.balance -= min(self.balance, b.credits)
            b.status = "charged_back"
        return lambda: self._settle(payment, None)

    # Helpers -------------------------------------------------------------------------------

    def _settle(self, payment: dict[str, Any], effect: str | None) -> None:
        with self.transaction() as session:
            settlement.record_payment(session, payment)
            outcome = settlement.apply_payment(session, payment_id=payment["id"])
        if effect is not None:
            assert outcome.effect == effect, outcome

    def _replay_spend(self, amount: int, reference: str) -> None:
        # Replayed, the spend either finds its posting or, the balance being short now,
        # is refused: in both cases nothing is posted again.
        try:
            with self.transaction() as session:
                posting, _ = ledger.spend(
                    session,
                    user_id=self.user_id,
                    amount=amount,
                    description=None,
                    reference=reference,
                )
            assert not posting.created
        except InsufficientCreditsError:
            pass

    def _request_refund_again(self, b: Bought) -> None:
        try:
            with self.transaction() as session:
                refunds.request_refund(session, purchase_id=b.purchase_id, requested_by=None)
        except ConflictError:
            assert b.refund != "requested"

    def _finish_refund(self, b: Bought, succeeded: bool) -> None:
        with self.transaction() as session:
            refund = settlement.refund_of(session, b.payment_id)
            assert refund is not None
            if succeeded:
                refunds.complete_refund(session, refund_id=refund.id, provider_refund_id="r1")
            else:
                refunds.fail_refund(
                    session, refund_id=refund.id, error="refused", payment_status=b.provider
                )


def approved_payment(
    purchase: Purchase,
    payment_id: int,
    *,
    status: str = "approved",
    updated: datetime | None = None,
) -> dict[str, Any]:
    """The payment as MercadoPago's GET /v1/payments/{id} answers it (`updated`: when it
    took this status; a replay carries the same date, as MercadoPago's answer does)."""
    return {
        "id": payment_id,
        "status": status,
        "status_detail": "accredited" if status == "approved" else status,
        "external_reference": purchase.external_reference,
        "transaction_amount": str(purchase.amount),
        "currency_id": purchase.currency,
        "date_last_updated": (updated or utcnow()).isoformat(),
    }


def new_purchase(sessions: Callable[[], Session], user_id: uuid.UUID, package_id: str) -> uuid.UUID:
    """A pending purchase, as `POST …/credits/buy` leaves it before payment.

    Made only for a payment about to settle it: a pending purchase left behind would sit in
    the reconciliation queue of later tests."""
    with sessions() as session:
        purchase = create_purchase(session, user_id=user_id, package_id=package_id, ttl_minutes=60)
        session.commit()
        return purchase.id


def snapshot(session: Session, user_id: uuid.UUID) -> tuple[int, int, int]:
    """(balance column, sum of the wallet's entries, number of the user's transactions)."""
    account = session.execute(
        select(LedgerAccount).where(LedgerAccount.user_id == user_id)
    ).scalar_one_or_none()
    if account is None:
        return 0, 0, 0
    entries = session.execute(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account.id
        )
    ).scalar_one()
    count = session.execute(
        select(func.count())
        .select_from(LedgerTransaction)
        .where(LedgerTransaction.user_id == user_id)
    ).scalar_one()
    return int(account.balance), int(entries), int(count)


def unbalanced_transactions(session: Session, user_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        session.execute(
            select(LedgerEntry.transaction_id)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerTransaction.user_id == user_id)
            .group_by(LedgerEntry.transaction_id)
            .having(func.sum(LedgerEntry.amount) != 0)
        ).scalars()
    )


def check_invariants(account: Account) -> tuple[int, int, int]:
    with account.sessions() as session:
        state = snapshot(session, account.user_id)
        balance, entries, _ = state
        assert balance == entries == account.balance, (state, account.balance)
        assert balance >= 0
        assert unbalanced_transactions(session, account.user_id) == []
    return state


@pytest.fixture()
def new_account(app, make_user, user_id_of) -> Callable[[], Account]:
    sessions = app.extensions["spartan.sessions"]

    def make() -> Account:
        user_id = user_id_of(make_user())
        with sessions() as session:
            packages = [p.id for p in list_packages(session)]
        return Account(sessions, user_id, packages)

    return make


# The interleavings the rules single out, always run whatever the generator draws.
@example(ops=[("buy",), ("spend", 30), ("chargeback", 0)])  # takes the 70 left
@example(ops=[("buy",), ("spend", 100), ("refund", 0), ("spend", 1)])  # refund refused
@example(ops=[("buy",), ("refund", 0), ("chargeback", 0), ("refund_done", 0, False)])
@example(ops=[("buy",), ("refund", 0), ("refund_done", 0, False), ("refund", 0), ("chargeback", 0)])
@example(ops=[("buy",), ("buy",), ("refund", 1), ("refund_done", 1, True), ("chargeback", 1)])
@PROPERTY_SETTINGS
@given(ops=operations)
def test_interleavings_keep_the_ledger_whole_and_replays_change_nothing(new_account, ops):
    account = new_account()
    for op, *args in ops:
        replay = getattr(account, op)(*args)
        after = check_invariants(account)
        replay()
        assert check_invariants(account) == after, f"replaying {op}{tuple(args)} changed it"
    with account.sessions() as session:
        report = ledger.check_parity(session)
    assert report["drift"] == report["negative"] == report["unbalanced_transactions"] == 0
    assert report["grand_total"] == 0


@settings(PROPERTY_SETTINGS, max_examples=15)
@given(ops=operations)
def test_one_interleaving_run_by_three_threads_at_once_moves_money_once(new_account, ops):
    """Three workers handed the same operations (same payment ids, spend references and
    refunds) race; whatever the order, each reference posts once and nothing breaks."""
    plan = new_account()
    script = concrete_script(plan, ops)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        for step in script:
            try:
                step()
            except (ConflictError, InsufficientCreditsError):
                pass  # refused given what another thread did first: a clean refusal
            except BaseException as exc:  # a deadlock, an integrity error, a failed assert
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    with plan.sessions() as session:
        balance, entries, count = snapshot(session, plan.user_id)
        assert balance == entries >= 0
        assert unbalanced_transactions(session, plan.user_id) == []
        sales = session.execute(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.user_id == plan.user_id, LedgerTransaction.kind == "sale")
        ).scalar_one()
    buys = sum(1 for op, *_ in ops if op == "buy")
    assert sales == buys
    # At most one posting per operation of the script, whatever the threads did.
    assert count <= len(script)


def concrete_script(plan: Account, ops: list[tuple[Any, ...]]) -> list[Callable[[], None]]:
    """The operations with their references fixed in advance, to run in any thread.

    Outcomes depend on what the other threads did first, so steps read the database's
    state instead of the model and let the domain refuse what no longer applies.
    """
    sessions, user_id = plan.sessions, plan.user_id
    payments: list[tuple[uuid.UUID, int]] = []
    steps: list[Callable[[], None]] = []

    @contextmanager
    def txn() -> Iterator[Session]:
        with sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    approved_at = utcnow()
    # Whichever thread records it last, the chargeback is the newer state of the payment.
    updated = {"approved": approved_at, "charged_back": approved_at + timedelta(minutes=1)}

    def settle(purchase_id: uuid.UUID, payment_id: int, status: str) -> Callable[[], None]:
        def step() -> None:
            with txn() as session:
                purchase = session.get(Purchase, purchase_id)
                assert purchase is not None
                payment = approved_payment(
                    purchase, payment_id, status=status, updated=updated[status]
                )
                settlement.record_payment(session, payment)
                settlement.apply_payment(session, payment_id=payment_id)

        return step

    def spend(amount: int, reference: str) -> Callable[[], None]:
        def step() -> None:
            with txn() as session:
                ledger.spend(
                    session,
                    user_id=user_id,
                    amount=amount,
                    description=None,
                    reference=reference,
                )

        return step

    def refund(purchase_id: uuid.UUID) -> Callable[[], None]:
        def step() -> None:
            with txn() as session:
                refunds.request_refund(session, purchase_id=purchase_id, requested_by=None)

        return step

    def refund_done(payment_id: int, succeeded: bool) -> Callable[[], None]:
        def step() -> None:
            with txn() as session:
                found = settlement.refund_of(session, payment_id)
                if found is None or found.status != "requested":
                    return
                # Read the payment's status as the worker would ask MercadoPago for it.
                provider = session.execute(
                    select(settlement.MercadoPagoPayment.status).where(
                        settlement.MercadoPagoPayment.id == payment_id
                    )
                ).scalar_one()
                if succeeded:
                    refunds.complete_refund(session, refund_id=found.id, provider_refund_id="r")
                else:
                    refunds.fail_refund(
                        session, refund_id=found.id, error="refused", payment_status=provider
                    )

        return step

    for n, (op, *args) in enumerate(ops):
        if op == "buy":
            package_id = plan.packages[len(payments) % len(plan.packages)]
            payments.append((new_purchase(sessions, user_id, package_id), next(_PAYMENT_IDS)))
            steps.append(settle(*payments[-1], "approved"))
        elif op == "spend":
            steps.append(spend(args[0], f"spend:{user_id}:{n}"))
        elif payments:
            purchase_id, payment_id = payments[args[0] % len(payments)]
            if op == "refund":
                steps.append(refund(purchase_id))
            elif op == "refund_done":
                steps.append(refund_done(payment_id, args[1]))
            else:
                steps.append(settle(purchase_id, payment_id, "charged_back"))
    return steps
