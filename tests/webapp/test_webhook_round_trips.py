"""The round trips of MercadoPago's webhook, counted so they cannot creep back (issue 17).

A new notification is the signature check, ONE SQL statement (the event, its settlement job
and the job's steps, written together) and ONE broker publish (the chain: on the Redis broker
one MULTI/LPUSH/EXEC pipeline, one send; no task-sent event, no result SUBSCRIBE). Counted on
the wire as psycopg sends it: the statement alone, autocommit (no BEGIN, no COMMIT) on a pool
without pre-ping (no `;` before it). A duplicate is the same statement writing nothing, and
no publish. The limiter (the route is exempt) and the request metrics (buffered in process,
flushed by another thread) cost no Redis command on the request.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.pool import NullPool

from market.db import _drop_dead_connection
from market.models import Job, JobStep, PaymentEvent
from tests.support.round_trips import counting
from tests.webapp.test_credits import WEBHOOK, notification, signed


def engine(app):
    return app.extensions["spartan.engine"]


def post(client, settings, data_id: str, request_id: str, kind: str = "payment", ts=None):
    return client.post(
        f"{WEBHOOK}?data.id={data_id}&type={kind}",
        json={**notification(data_id), "type": kind},
        headers=signed(settings.mercadopago_webhook_secret, data_id, request_id, ts=ts),
    )


def test_a_new_payment_notification_is_one_statement_and_one_publish(
    app, client, settings, db, monkeypatch
):
    data_id = str(891000000 + int(time.time()) % 100000)
    post(client, settings, str(int(data_id) + 1), "warm")  # the broker connection is open
    with counting(engine(app), monkeypatch) as seen:
        answer = post(client, settings, data_id, "new")
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    assert len(seen.statements) == 1, seen.statements
    assert seen.statements[0].lstrip().startswith("WITH stored_event AS")
    # On the wire to PostgreSQL: the statement; no pre-ping, no BEGIN, no COMMIT.
    assert seen.postgres == [seen.statements[0][:60]], seen.postgres
    # One publish, and nothing else on Redis: no limiter, no metrics, no task-sent event.
    assert len(seen.redis) == 1 and "LPUSH" in seen.redis[0].upper(), seen.redis

    # What the statement wrote: the event names its job; the job has its steps, queued.
    event = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == data_id)).scalar_one()
    job = db.get(Job, event.job_id)
    assert job is not None and job.state == "queued" and job.kind == "credits.settlement"
    assert job.subject == f"mercadopago-payment:{data_id}"
    steps = db.execute(
        select(JobStep).where(JobStep.job_id == job.id).order_by(JobStep.position)
    ).scalars()
    assert [(s.name, s.state, s.attempts) for s in steps] == [
        ("fetch_payment", "pending", 0),
        ("apply_payment", "pending", 0),
    ]


def test_a_duplicate_is_one_statement_and_no_publish(app, client, settings, db, monkeypatch):
    data_id = str(892000000 + int(time.time()) % 100000)
    ts = int(time.time() * 1000)  # a copy keeps its signature
    assert post(client, settings, data_id, "dup", ts=ts).get_json()["status"] == "accepted"
    with counting(engine(app), monkeypatch) as seen:
        answer = post(client, settings, data_id, "dup", ts=ts)
    assert answer.status_code == 200 and answer.get_json()["status"] == "duplicate"
    assert len(seen.statements) == 1, seen.statements
    assert seen.postgres == [seen.statements[0][:60]], seen.postgres
    assert seen.redis == [], seen.redis
    jobs = db.execute(select(Job).where(Job.subject == f"mercadopago-payment:{data_id}"))
    assert len(jobs.all()) == 1


def test_a_merchant_order_is_one_statement_and_one_publish(app, client, settings, db, monkeypatch):
    order_id = str(893000000 + int(time.time()) % 100000)
    post(client, settings, str(int(order_id) + 1), "warm", kind="merchant_order")
    with counting(engine(app), monkeypatch) as seen:
        answer = post(client, settings, order_id, "order", kind="merchant_order")
    assert answer.get_json()["status"] == "accepted"
    assert len(seen.statements) == 1 and len(seen.postgres) == 1, seen.postgres
    assert len(seen.redis) == 1 and "LPUSH" in seen.redis[0].upper(), seen.redis
    event = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == order_id)).scalar_one()
    job = db.get(Job, event.job_id)
    assert job.kind == "credits.payment_event" and job.subject == f"payment-event:{event.id}"


def test_an_ignored_topic_is_one_statement_and_no_publish(app, client, settings, db, monkeypatch):
    data_id = str(894000000 + int(time.time()) % 100000)
    with counting(engine(app), monkeypatch) as seen:
        answer = post(client, settings, data_id, "other", kind="subscription_preapproval")
    assert answer.get_json()["status"] == "ignored"
    assert len(seen.statements) == 1 and len(seen.postgres) == 1, seen.postgres
    assert seen.redis == []
    event = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == data_id)).scalar_one()
    assert event.processed_at is not None and event.job_id is None


def _end_web_connections(settings) -> None:
    """End every connection of the app's pool, from a connection of another engine (the
    `db` fixture's session shares the app's pool), and wait until each backend has exited:
    pg_terminate_backend alone only signals it, and a request sent at once could still find
    a live connection. A backend writes its FATAL message to the socket before it exits."""
    other = create_engine(settings.database_url, poolclass=NullPool)
    with other.begin() as conn:
        ended = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = 'spartan-web'"
            )
        ).scalars()
        assert all(ended)
    other.dispose()


def test_a_connection_the_server_ended_is_replaced_before_the_statement(
    app, client, settings, db, monkeypatch
):
    """A pooled connection PostgreSQL has ended (a restart, a failover) is seen dead at
    checkout, without a round trip: the statement goes once, on a fresh connection."""
    first, second = (str(895000000 + int(time.time()) % 100000 + i) for i in (0, 1))
    assert post(client, settings, first, "before").get_json()["status"] == "accepted"
    _end_web_connections(settings)
    with counting(engine(app), monkeypatch) as seen:
        answer = post(client, settings, second, "after")
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    assert len(seen.statements) == 1 and len(seen.postgres) == 1, seen.postgres
    rows = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == second)).scalars().all()
    assert len(rows) == 1 and db.get(Job, rows[0].job_id) is not None


def test_a_connection_dead_without_a_word_fails_once_and_the_statement_goes_again(
    app, client, settings, db, monkeypatch
):
    """A connection whose death the checkout cannot see (here: the check is taken away, as a
    cable pulled would hide it) fails the statement once; it is sent again on a fresh
    connection, and the event is stored once."""
    first, second = (str(898000000 + int(time.time()) % 100000 + i) for i in (0, 1))
    assert post(client, settings, first, "before").get_json()["status"] == "accepted"
    _end_web_connections(settings)
    event.remove(engine(app), "checkout", _drop_dead_connection)
    try:
        with counting(engine(app), monkeypatch) as seen:
            answer = post(client, settings, second, "after")
    finally:
        event.listen(engine(app), "checkout", _drop_dead_connection)
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    assert len(seen.statements) == 2  # failed on the dead connection, then sent again
    rows = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == second)).scalars().all()
    assert len(rows) == 1 and db.get(Job, rows[0].job_id) is not None


def _planned_payment_event(event_id: uuid.UUID, data_id: str):
    """A payment event's settlement job, planned, and the statement that stores both."""
    from market.payments.mercadopago import events
    from workflows.payment_events import plan_for_event

    job, owned = plan_for_event(event_id=event_id, kind="payment", data_id=data_id)
    statement = events.store(
        event_id=event_id,
        dedupe_key=f"test:{event_id}",
        kind="payment",
        data_id=data_id,
        payment_id=int(data_id),
        job=job,
        owned_by_payment=owned,
    )
    return job, statement


def test_the_statement_sent_again_after_it_committed_answers_as_the_first_try(app, db):
    """The retry's case where the first try committed but its answer was lost: the same
    statement (same ids) finds its own row and answers "new", so the chain is still sent;
    its job and steps are not written twice."""
    from market.db import execute_idempotent
    from market.payments.mercadopago import events
    from workflows.payment_events import plan_for_event

    data_id = str(896000000 + int(time.time()) % 100000)
    event_id = uuid.uuid4()
    job, statement = _planned_payment_event(event_id, data_id)
    assert execute_idempotent(engine(app), *statement)[0] == event_id
    assert execute_idempotent(engine(app), *statement)[0] == event_id
    steps = db.execute(select(JobStep).where(JobStep.job_id == job.id)).scalars().all()
    assert len(steps) == len(job.steps) == 2  # fetch_payment, apply_payment
    # Another notification with the same signed parts (a copy: other ids) is a duplicate.
    copy = plan_for_event(event_id=uuid.uuid4(), kind="payment", data_id=data_id)[0]
    again = events.store(
        event_id=uuid.uuid4(),
        dedupe_key=f"test:{event_id}",
        kind="payment",
        data_id=data_id,
        payment_id=int(data_id),
        job=copy,
    )
    assert execute_idempotent(engine(app), *again) is None
    assert db.get(Job, copy.id) is None


def test_a_lost_publish_leaves_rows_both_sweeps_find(app, db):
    """What the statement writes is what the sweeps look for when its publish is lost: a
    queued job with its pending steps (resend_stale_jobs sends it again from them) and an
    unprocessed event naming that job (requeue_payment_events leaves it to the former)."""
    from datetime import timedelta

    from market import jobs
    from market.db import execute_idempotent
    from market.models.base import utcnow
    from market.payments.mercadopago import events

    data_id = str(897000000 + int(time.time()) % 100000)
    event_id = uuid.uuid4()
    job, statement = _planned_payment_event(event_id, data_id)
    assert execute_idempotent(engine(app), *statement) is not None  # and no publish
    later = utcnow() + timedelta(seconds=1)
    stale = {j.id: j for j in jobs.stale_queued_jobs(db, older_than=later, limit=10_000)}
    assert job.id in stale
    assert [(s.task_name, s.task_id, s.state) for s in stale[job.id].steps] == [
        (spec.task_name, task_id, "pending")
        for spec, task_id in zip(job.steps, job.task_ids, strict=True)
    ]
    claimed = events.claim_stale(db, older_than=later, max_attempts=10, limit=10_000)
    assert any(e.id == event_id and e.job_id == job.id for e in claimed)
    db.rollback()
