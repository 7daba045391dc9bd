"""Fault 5: `celery beat` runs twice by mistake, so every periodic job is sent twice.

Promise: a job that must not overlap holds a Redis lock (`workers.maintenance.locks.singleton`)
and a second run while the first is inside skips; every other job in the beat table is safe to
run twice at once (its own row claims, forward-only states, or read-only). The table below
says which is which: a new beat entry without a line here fails the suite.

The overlap is real: the first run is held inside its body by a PostgreSQL lock this test
takes on a table the job writes, and the second run starts from another thread meanwhile.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from beat_schedule import SCHEDULE
from market.models import PaymentEvent
from market.models.base import utcnow
from tests.reliability.burst import approved, assert_credited_once, make_users, pay, prepare
from tests.support.poll import wait_for
from workers import runtime

# Jobs guarded by `singleton`: (lock name, a table the job writes or reads inside the lock,
# arguments). The table is what the test locks to hold the first run inside.
SINGLETON: dict[str, tuple[str, str, dict[str, Any]]] = {
    "maintenance.evaluate_alerts": ("evaluate_alerts", "alert_states", {}),
    "maintenance.purge_records": ("purge_records", "jobs", {}),
    "maintenance.rollup_analytics": ("rollup_analytics", "analytics_user_daily", {}),
    "maintenance.reconcile_purchases": ("reconcile_purchases", "purchases", {"older_than_s": 0}),
    "maintenance.purge_media": ("purge_media", "media_files", {}),
}
# Jobs without the lock, and why two at once are harmless.
CONCURRENT_SAFE: dict[str, str] = {
    "maintenance.beat_heartbeat": "writes the current time to one key",
    "maintenance.resend_stale_jobs": "claims stale jobs FOR UPDATE SKIP LOCKED and touches them;"
    " a step already running or finished does nothing",
    "maintenance.requeue_payment_events": "claims payment events FOR UPDATE SKIP LOCKED and"
    " stamps them; settling a payment is idempotent (proved below)",
    "maintenance.expire_purchases": "expires under the purchase's row lock, pending only",
    "maintenance.check_ledger": "folds running-total slots under an advisory lock, skipping"
    " slots in use (the sums do not change); the check itself is read-only",
    "notifications.retry_deliveries": "claims due deliveries FOR UPDATE SKIP LOCKED",
    "notifications.dispatch_pending": "claims undispatched notifications FOR UPDATE SKIP LOCKED",
}


def test_every_beat_job_is_locked_or_safe_to_run_twice():
    scheduled = {entry["task"] for entry in SCHEDULE.values()}
    assert scheduled == set(SINGLETON) | set(CONCURRENT_SAFE)
    assert not set(SINGLETON) & set(CONCURRENT_SAFE)


def blocked_in_database(sessions, table: str) -> bool:
    """Whether a worker-pool connection of this run waits for the lock on `table`."""
    with sessions() as session:
        return bool(
            session.execute(
                select(func.count())
                .select_from(text("pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"))
                .where(
                    text("NOT l.granted"),
                    text("l.relation = CAST(:table AS regclass)"),
                    text("a.application_name = 'spartan-worker'"),
                )
                .params(table=table)
            ).scalar_one()
        )


@pytest.mark.parametrize("task_name", sorted(SINGLETON))
def test_a_second_run_skips_while_the_first_is_inside(task_name, sessions, settings, celery_app):
    lock_name, table, kwargs = SINGLETON[task_name]
    task = celery_app.tasks[task_name]
    lock_key = f"{settings.key_prefix}:lock:{lock_name}"
    redis = runtime.redis_client()
    assert not redis.exists(lock_key)
    with ThreadPoolExecutor(1, thread_name_prefix="beat-1") as first_beat:
        with sessions() as holder, holder.begin():
            holder.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            first = first_beat.submit(task, **kwargs)
            wait_for(
                lambda: blocked_in_database(sessions, table) and redis.exists(lock_key),
                timeout=30,
                what=f"the first {task_name} holding its lock, blocked on {table}",
            )
            with ThreadPoolExecutor(1, thread_name_prefix="beat-2") as second_beat:
                second = second_beat.submit(task, **kwargs).result(timeout=30)
            assert set(second) == {"skipped"}, second
            assert not first.done()
        # The holder's transaction ends: the first run goes on and finishes its work.
        result = first.result(timeout=60)
    assert "skipped" not in result, result
    assert not redis.exists(lock_key), "the lock is released when the run ends"
    assert "skipped" not in task(**kwargs), "the next run takes the lock again"


def test_two_payment_event_sweeps_at_once_take_each_event_once(
    sessions, settings, mp_sandbox, celery_app, worker
):
    """requeue_payment_events has no lock: two concurrent sweeps split the due rows, each
    starting one settlement job per event."""
    burst = prepare(
        sessions,
        settings,
        mp_sandbox,
        users=make_users(sessions, 2),
        n=20,
        webhook_url="http://127.0.0.1:9/never-sent",  # webhooks withheld below
    )
    burst = pay(mp_sandbox, burst, webhook="withhold")
    # The payment events a lost settlement leaves behind: stored a while ago, never processed.
    # Those earlier tests left unprocessed are not this test's: the sweeps must not count them.
    with sessions() as session, session.begin():
        session.execute(
            update(PaymentEvent)
            .where(PaymentEvent.processed_at.is_(None))
            .values(processed_at=utcnow())
        )
        for paid in burst:
            session.add(
                PaymentEvent(
                    dedupe_key=f"n:{uuid.uuid4().int % 10**15}",
                    type="payment",
                    action="payment.created",
                    data_id=str(paid.payment_id),
                    payment_id=paid.payment_id,
                    body={"data": {"id": str(paid.payment_id)}},
                    received_at=utcnow() - timedelta(minutes=10),
                )
            )
    sweep = celery_app.tasks["maintenance.requeue_payment_events"]
    with ThreadPoolExecutor(2) as beats:
        results = list(beats.map(lambda _: sweep(older_than_s=60), range(2)))
    assert sum(r["requeued"] for r in results) == len(burst), results
    ids = [str(p.payment_id) for p in burst]
    with sessions() as session:
        attempts = session.execute(
            select(PaymentEvent.attempts).where(PaymentEvent.data_id.in_(ids))
        ).scalars()
        assert sorted(attempts) == [2] * len(burst), "each row taken by exactly one sweep"
    wait_for(lambda: approved(sessions, burst) == len(burst), timeout=60, what="settlements")
    assert_credited_once(sessions, burst)
