"""A burst of purchases paid at the sandbox, and the checks that each was credited once.

Purchases and their preferences are made the way the purchase workflow makes them (market
functions, the real gateway against the sandbox) but in this process, so a burst of 200 costs
no API calls; what is under test is the settlement that the sandbox's webhooks start.
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from market import ledger
from market.config import Settings
from market.identity.tokens import Identity, upsert_user
from market.models import (
    LedgerTransaction,
    MercadoPagoPayment,
    PaymentEvent,
    Purchase,
)
from market.payments import purchases
from tests.support.mercadopago import MercadoPagoSandbox

PACKAGE = "credits-100"
CREDITS = 100


@dataclass(frozen=True)
class Paid:
    purchase_id: uuid.UUID
    user_id: uuid.UUID
    preference_id: str
    payment_id: int = 0


def make_users(sessions: sessionmaker[Session], n: int) -> list[uuid.UUID]:
    """`n` users as the API creates them on first sight of a token."""
    with sessions() as session, session.begin():
        return [
            upsert_user(session, Identity(f"rel-{uuid.uuid4().hex[:12]}", None, None, False)).id
            for _ in range(n)
        ]


def prepare(
    sessions: sessionmaker[Session],
    settings: Settings,
    sandbox: MercadoPagoSandbox,
    *,
    users: list[uuid.UUID],
    n: int,
    webhook_url: str,
) -> list[Paid]:
    """`n` pending purchases (users in turn), each with its preference at the sandbox whose
    notification_url is `webhook_url`."""
    settings = replace(
        settings, mercadopago_api_base_url=sandbox.url, mercadopago_webhook_url=webhook_url
    )
    gateway = purchases.gateway_for(settings)
    made = []
    with sessions() as session, session.begin():
        for i in range(n):
            purchase = purchases.create_purchase(
                session, user_id=users[i % len(users)], package_id=PACKAGE, ttl_minutes=60
            )
            body = purchases.preference_body(purchase, settings)
            pref = gateway.create_preference(body, idempotency_key=purchase.external_reference)
            purchases.save_preference(session, purchase_id=purchase.id, preference=pref)
            made.append(Paid(purchase.id, purchase.user_id, str(pref["id"])))
    return made


def pay(sandbox: MercadoPagoSandbox, burst: list[Paid], **options: Any) -> list[Paid]:
    """Pay every preference (approved) at the sandbox, which sends its webhooks at once."""
    with ThreadPoolExecutor(8) as pool:
        payments = list(pool.map(lambda p: sandbox.pay(p.preference_id, **options), burst))
    return [
        replace(p, payment_id=int(payment["id"]))
        for p, payment in zip(burst, payments, strict=True)
    ]


def approved(sessions: sessionmaker[Session], burst: list[Paid]) -> int:
    """How many of the burst's purchases are approved."""
    with sessions() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(Purchase)
                .where(
                    Purchase.id.in_([p.purchase_id for p in burst]), Purchase.status == "approved"
                )
            ).scalar_one()
        )


def fetched(sessions: sessionmaker[Session], burst: list[Paid]) -> int:
    """How many of the burst's payments a worker has fetched from MercadoPago and recorded."""
    with sessions() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(MercadoPagoPayment)
                .where(MercadoPagoPayment.id.in_([p.payment_id for p in burst]))
            ).scalar_one()
        )


def inbox_rows(sessions: sessionmaker[Session], burst: list[Paid]) -> dict[str, int]:
    """The burst's inbox rows: stored, processed, and those the sweeper had to take again."""
    ids = [str(p.payment_id) for p in burst]
    inbox = PaymentEvent
    with sessions() as session:
        row = session.execute(
            select(
                func.count(),
                func.count(inbox.processed_at),
                # attempts starts at 1; the sweeper adds one each time it takes the row.
                func.count().filter(inbox.attempts > 1),
            ).where(inbox.data_id.in_(ids))
        ).one()
    return {"stored": row[0], "processed": row[1], "requeued": row[2]}


def assert_credited_once(sessions: sessionmaker[Session], burst: list[Paid]) -> dict[str, Any]:
    """Every purchase approved with its own payment, one sale per payment, each user's
    balance the credits bought, and the whole ledger in parity. Returns the parity report."""
    ids = [p.purchase_id for p in burst]
    with sessions() as session:
        rows = session.execute(
            select(Purchase.id, Purchase.status, Purchase.payment_id).where(Purchase.id.in_(ids))
        ).all()
        assert {(r.id, r.status, r.payment_id) for r in rows} == {
            (p.purchase_id, "approved", p.payment_id) for p in burst
        }
        txns = session.execute(
            select(LedgerTransaction.reference, LedgerTransaction.kind).where(
                LedgerTransaction.purchase_id.in_(ids)
            )
        ).all()
        assert sorted(txns) == sorted(
            (f"mercadopago:payment:{p.payment_id}", "sale") for p in burst
        ), "every purchase has exactly one sale, under its payment's reference"
        bought = Counter(p.user_id for p in burst)
        balances = {user: ledger.balance(session, user) for user in bought}
        assert balances == {user: CREDITS * n for user, n in bought.items()}
        report = ledger.check_parity(session)
    assert (
        report["drift"],
        report["negative"],
        report["unbalanced_transactions"],
        report["empty_transactions"],
        report["grand_total"],
    ) == (0, 0, 0, 0, 0), report
    return report
