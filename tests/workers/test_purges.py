"""Purges of the inbox, delivery logs, idempotency keys and expired purchases: only what is
past retention goes, in bounded batches, and a rerun removes nothing more."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from market.models import (
    IdempotencyKey,
    MercadoPagoPayment,
    PaymentEvent,
    PaymentRefund,
    Purchase,
    WebhookDelivery,
    WebhookEndpoint,
)
from market.models.base import utcnow
from market.ops import purges
from workers.maintenance import purges as purge_tasks

DAY = timedelta(days=1)


def _inbox(db, *, processed_ago, received_ago=None):
    now = utcnow()
    row = PaymentEvent(
        dedupe_key=f"test-purge:{uuid.uuid4()}",
        type="payment",
        data_id=str(random.randrange(10**9, 10**12)),
        received_at=now - (received_ago or processed_ago or DAY),
        processed_at=None if processed_ago is None else now - processed_ago,
    )
    db.add(row)
    return row


def _delivery(db, endpoint, *, state, changed_ago):
    row = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_type="profile.updated",
        payload="{}",
        state=state,
        updated_at=utcnow() - changed_ago,
    )
    db.add(row)
    return row


def _key(db, user_id, *, created_ago):
    row = IdempotencyKey(
        user_id=user_id,
        key=f"k-{uuid.uuid4()}",
        scope="credits.spend",
        request_hash="0" * 64,
        response_status=201,
        response_body={"ok": True},
        created_at=utcnow() - created_ago,
    )
    db.add(row)
    return row


def _purchase(db, user_id, *, status, settled_ago):
    when = utcnow() - settled_ago
    row = Purchase(
        user_id=user_id,
        package_id="credits-100",
        credits=100,
        amount=Decimal("10.00"),
        currency="ARS",
        external_reference=f"sm-{uuid.uuid4().hex}",
        status=status,
        expires_at=when,
        settled_at=when if status != "pending" else None,
    )
    db.add(row)
    return row


def _exists(db, model, *pk) -> bool:
    db.expire_all()
    return db.get(model, pk if len(pk) > 1 else pk[0]) is not None


@pytest.mark.usefixtures("worker")
def test_each_purge_removes_only_what_is_past_retention(db, settings, alice, user_id_of):
    uid = user_id_of(alice)
    inbox_days = timedelta(days=settings.payment_event_retention_days)
    delivery_days = timedelta(days=settings.delivery_retention_days)
    key_ttl = timedelta(hours=settings.idempotency_key_ttl_hours)
    purchase_days = timedelta(days=settings.expired_purchase_retention_days)
    endpoint = WebhookEndpoint(
        owner_id=uid, url="https://example.com/hook", events=["profile.updated"], secret="whsec_x"
    )
    db.add(endpoint)
    db.flush()

    gone = [
        _inbox(db, processed_ago=inbox_days + DAY),
        _delivery(db, endpoint, state="succeeded", changed_ago=delivery_days + DAY),
        _delivery(db, endpoint, state="failed", changed_ago=delivery_days + DAY),
        _key(db, uid, created_ago=key_ttl + timedelta(hours=1)),
        _purchase(db, uid, status="expired", settled_ago=purchase_days + DAY),
    ]
    paid_late = _purchase(db, uid, status="expired", settled_ago=purchase_days + DAY)
    refunded = _purchase(db, uid, status="expired", settled_ago=purchase_days + DAY)
    kept = [
        _inbox(db, processed_ago=inbox_days - DAY),
        _inbox(db, processed_ago=None, received_ago=inbox_days * 3),  # never processed
        _delivery(db, endpoint, state="succeeded", changed_ago=delivery_days - DAY),
        _delivery(db, endpoint, state="pending", changed_ago=delivery_days * 3),
        _key(db, uid, created_ago=key_ttl - timedelta(hours=1)),
        _purchase(db, uid, status="expired", settled_ago=purchase_days - DAY),
        _purchase(db, uid, status="pending", settled_ago=purchase_days * 3),
        _purchase(db, uid, status="rejected", settled_ago=purchase_days * 3),
        paid_late,
        refunded,
    ]
    db.flush()
    # A payment MercadoPago reported, or a refund, keeps an expired purchase for the record.
    payment_id = random.randrange(10**9, 10**12)
    db.add(
        MercadoPagoPayment(
            id=payment_id, external_reference=paid_late.external_reference, status="rejected"
        )
    )
    db.add(
        PaymentRefund(
            purchase_id=refunded.id,
            payment_id=payment_id + 1,
            reason="purchase_expired",
            status="succeeded",
            amount=Decimal("10.00"),
        )
    )
    db.commit()
    ids = [(type(r), _pk(r)) for r in gone], [(type(r), _pk(r)) for r in kept]

    first = purge_tasks.purge_records.delay().get(timeout=60)["purged"]
    for name in ("payment_events", "idempotency_keys", "expired_purchases"):
        assert first[name] >= 1, (name, first)
    assert first["deliveries"] >= 2, first
    assert [model.__name__ for model, pk in ids[0] if _exists(db, model, *pk)] == []
    assert [model.__name__ for model, pk in ids[1] if not _exists(db, model, *pk)] == []

    second = purge_tasks.purge_records.delay().get(timeout=60)["purged"]
    assert set(second.values()) == {0}, second


def _pk(row):
    if isinstance(row, IdempotencyKey):
        return (row.user_id, row.key)
    return (row.id,)


def test_purges_work_in_bounded_batches(db, settings):
    before = utcnow() - timedelta(days=settings.payment_event_retention_days)
    rows = [
        _inbox(db, processed_ago=timedelta(days=settings.payment_event_retention_days + 2 + i))
        for i in range(5)
    ]
    db.flush()
    ours = [r.id for r in rows]

    def left() -> int:
        return len(db.execute(select(PaymentEvent.id).where(PaymentEvent.id.in_(ours))).all())

    # Oldest first, never more than `limit` per call (other tests' old rows may share a batch).
    sizes = []
    while (batch := purges.processed_payment_events(db, before=before, limit=2)).deleted:
        assert batch.deleted <= 2
        sizes.append(batch.deleted)
    assert left() == 0 and sum(sizes) >= 5 and len(sizes) >= 3
    db.rollback()
