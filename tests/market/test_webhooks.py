"""Webhook bookkeeping against the real database: fan-out, leases, overtaken attempts, purge."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from market import notifications
from market.models import Notification, User, WebhookDelivery
from market.models.base import utcnow
from market.outbound import endpoints, sending
from market.outbound.transport import DeliveryOutcome

POLICY = sending.Policy(
    schedule=(60.0,), disable_after_failures=10, disable_after=timedelta(hours=24)
)
LEASE = timedelta(seconds=60)
OK = DeliveryOutcome(200, 5, None, False, None, "ok")
DOWN = DeliveryOutcome(503, 5, "HTTP 503", True, None, "")


def setup(db, user_id, *, events=("profile.updated",)) -> tuple[uuid.UUID, Notification]:
    """An endpoint of the user and one recorded notification (flushed, not committed)."""
    user = db.get(User, user_id)
    endpoint = endpoints.create_endpoint(
        db,
        owner=user,
        url="http://127.0.0.1:9/hooks",
        events=events,
        allowed_hosts=frozenset({"127.0.0.1"}),
    )
    key = f"test:{uuid.uuid4()}"
    notifications.record(db, user_id=user_id, kind="profile.updated", title="t", dedupe_key=key)
    notification = db.execute(
        select(Notification).where(Notification.dedupe_key == key)
    ).scalar_one()
    return endpoint.id, notification


def test_fan_out_is_idempotent(db, alice, user_id_of):
    endpoint_id, notification = setup(db, user_id_of(alice))
    first = endpoints.fan_out(db, [notification])
    assert len(first) == 1
    assert endpoints.fan_out(db, [notification]) == []
    delivery = db.get(WebhookDelivery, first[0])
    assert delivery.endpoint_id == endpoint_id and delivery.state == "pending"
    db.rollback()


def test_an_overtaken_attempt_is_logged_but_does_not_decide(db, alice, user_id_of):
    _, notification = setup(db, user_id_of(alice))
    [delivery_id] = endpoints.fan_out(db, [notification])

    [slow] = sending.claim_due(db, limit=10, lease=LEASE, ids=[delivery_id])
    assert sending.claim_due(db, limit=10, lease=LEASE, ids=[delivery_id]) == []
    # The lease runs out while the slow attempt hangs: another sender claims it again.
    db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(next_attempt_at=utcnow() - timedelta(seconds=1))
    )
    [fresh] = sending.claim_due(db, limit=10, lease=LEASE, ids=[delivery_id])
    assert (slow.number, fresh.number) == (1, 2) and fresh.trigger == "retry"

    sending.record_outcomes(db, [(fresh, OK)], policy=POLICY)
    sending.record_outcomes(db, [(slow, DOWN)], policy=POLICY)
    delivery = db.get(WebhookDelivery, delivery_id)
    db.refresh(delivery)
    assert delivery.state == "succeeded" and delivery.next_attempt_at is None
    assert sorted((a.number, a.status_code) for a in delivery.attempts) == [(1, 503), (2, 200)]
    db.rollback()


def test_a_retryable_failure_is_rescheduled_then_exhausted(db, alice, user_id_of):
    _, notification = setup(db, user_id_of(alice))
    [delivery_id] = endpoints.fan_out(db, [notification])

    [claim] = sending.claim_due(db, limit=10, lease=LEASE, ids=[delivery_id])
    sending.record_outcomes(db, [(claim, DOWN)], policy=POLICY)
    delivery = db.get(WebhookDelivery, delivery_id)
    assert delivery.state == "pending"
    # 60 s ± 20 % jitter, from the database clock.
    wait = (delivery.next_attempt_at - endpoints.db_now(db)).total_seconds()
    assert 47 <= wait <= 73

    delivery.next_attempt_at = endpoints.db_now(db)
    [claim] = sending.claim_due(db, limit=10, lease=LEASE, ids=[delivery_id])
    sending.record_outcomes(db, [(claim, DOWN)], policy=POLICY)
    assert delivery.state == "failed" and delivery.last_error == "HTTP 503"
    db.rollback()


def test_purge_removes_old_finished_deliveries_only(db, alice, user_id_of):
    _, first = setup(db, user_id_of(alice))
    key = f"test:{uuid.uuid4()}"
    notifications.record(
        db, user_id=user_id_of(alice), kind="profile.updated", title="t", dedupe_key=key
    )
    second = db.execute(select(Notification).where(Notification.dedupe_key == key)).scalar_one()
    finished, pending = endpoints.fan_out(db, [first, second])
    db.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == finished).values(state="succeeded")
    )
    # Last, as any UPDATE also sets updated_at.
    db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_([finished, pending]))
        .values(updated_at=utcnow() - timedelta(days=40))
    )
    removed = sending.purge_finished_deliveries(db, before=utcnow() - timedelta(days=30), limit=100)
    assert removed == 1
    assert db.get(WebhookDelivery, finished) is None
    assert db.get(WebhookDelivery, pending) is not None
    db.rollback()
