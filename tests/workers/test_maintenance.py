"""Operations tasks: beat heartbeat, alerts, purges, the beat table, ids in worker logs."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from beat_schedule import SCHEDULE
from market import logging as log_context
from market.jobs import StepSpec
from market.models import AlertState, Job, JobStep, Notification
from market.models.base import utcnow
from market.ops import alerts, health
from tests.support.poll import wait_for
from workers import runtime
from workers.app import app as celery_app
from workers.base import StepTask
from workers.maintenance import alerts as alert_tasks
from workers.maintenance import purges as purge_tasks
from workers.maintenance.locks import singleton
from workflows import base as workflows

pytestmark = pytest.mark.usefixtures("worker")

_seen: list[logging.LogRecord] = []


@celery_app.task(base=StepTask, name="maintenance.test_log_line")
def log_line(*, marker: str) -> None:
    logging.getLogger("tests.worker_log").warning("marker %s", marker)


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _seen.append(record)


def test_task_logs_carry_request_job_and_task_ids(db, alice, user_id_of):
    handler = _Collect()
    handler.addFilter(log_context.ContextFilter())
    logger = logging.getLogger("tests.worker_log")
    logger.addHandler(handler)
    marker, request_id = uuid.uuid4().hex, "req-" + uuid.uuid4().hex
    try:
        with log_context.context(request_id=request_id):
            job = workflows.start(
                db,
                kind="test.log",
                owner_id=user_id_of(alice),
                steps=[StepSpec("maintenance.test_log_line", {"marker": marker})],
            )
            db.commit()
        record = wait_for(
            lambda: next((r for r in _seen if marker in r.getMessage()), None),
            what="the task's log line",
        )
    finally:
        logger.removeHandler(handler)
    assert record.request_id == request_id
    assert record.job_id == str(job.id)
    assert record.task_id == job.steps[0].task_id
    assert record.task_name == "maintenance.test_log_line"


def test_beat_heartbeat_feeds_health(client, settings, admin):
    key = health.beat_heartbeat_key(settings.key_prefix)
    client_redis = runtime.redis_client()
    # An earlier test's heartbeat must not stand in for this one (its age grows with the suite).
    client_redis.delete(key)
    alert_tasks.beat_heartbeat.delay()
    wait_for(lambda: client_redis.get(key), what="a heartbeat")
    # An admin gets a fresh check (anonymous callers read a report up to ~10 s old).
    body = client.get("/api/v1/advanced/health", headers=admin).get_json()
    assert body["checks"]["beat"]["status"] == "ok"
    assert body["checks"]["beat"]["heartbeat_age_s"] < 30
    health.write_beat_heartbeat(client_redis, settings.key_prefix, now=time.time() - 200)
    body = client.get("/api/v1/advanced/health", headers=admin).get_json()
    assert body["checks"]["beat"]["status"] == "degraded"
    assert "beat" in body["degraded"]
    alert_tasks.beat_heartbeat.delay().get(timeout=20)


def _alerts_for(db, admin_id, rule):
    db.expire_all()
    return [
        (n.kind, n.data["breach_started_at"])
        for n in db.execute(
            select(Notification)
            .where(Notification.user_id == admin_id, Notification.kind.like("alert.%"))
            .order_by(Notification.created_at)
        ).scalars()
        if n.data.get("rule") == rule
    ]


def test_a_breach_notifies_every_admin_once_and_again_when_it_recovers(
    db, admin, make_user, user_id_of
):
    admins = [user_id_of(admin), user_id_of(make_user(admin=True))]
    limits = {"failed_jobs": 20.0}

    def evaluate(value):
        changes = alerts.evaluate(db, readings={"failed_jobs": value}, limits=limits)
        db.commit()
        return [c.kind for c in changes]

    evaluate(0)  # whatever an earlier test left: start from a healthy state
    # An admin of the session may hold alerts of earlier tests: only this breach counts.
    before = {admin_id: len(_alerts_for(db, admin_id, "failed_jobs")) for admin_id in admins}
    assert evaluate(25) == ["alert.triggered"]
    assert evaluate(30) == []  # still breached: nothing new
    assert evaluate(None) == []  # not measurable: the breach stays open
    assert evaluate(3) == ["alert.resolved"]
    assert evaluate(2) == []
    for admin_id in admins:
        sent = _alerts_for(db, admin_id, "failed_jobs")[before[admin_id] :]
        assert [kind for kind, _ in sent] == ["alert.triggered", "alert.resolved"]
        assert sent[0][1] == sent[1][1]  # both name the breach's start
    state = db.get(AlertState, "failed_jobs")
    assert state.breach_started_at is None and state.last_value == 2


def _job(db, *, state, finished_days_ago=None):
    job = Job(kind="test.purge", state=state)
    if finished_days_ago is not None:
        job.finished_at = utcnow() - timedelta(days=finished_days_ago)
    job.steps = [
        JobStep(
            position=0, name="s", task_name="maintenance.test_record", task_id=str(uuid.uuid4())
        )
    ]
    db.add(job)
    db.flush()
    return job


def test_the_alert_task_measures_every_rule(db, admin, user_id_of):
    db.execute(update(AlertState).values(breach_started_at=None))
    db.commit()
    result = alert_tasks.evaluate_alerts.delay().get(timeout=30)
    readings = result["readings"]
    assert set(readings) == {rule.name for rule in alerts.RULES}
    assert readings["workers_min"] >= 1
    assert readings["queue_depth"] is not None and readings["disk_free_pct"] > 0
    assert "workers_min" not in result["triggered"]


def test_purges_remove_only_what_is_past_retention(db, settings, alice, user_id_of):
    old = _job(db, state="succeeded", finished_days_ago=settings.job_retention_days + 1)
    recent = _job(db, state="failed", finished_days_ago=settings.job_retention_days - 1)
    running = _job(db, state="running")
    running.created_at = utcnow() - timedelta(days=400)
    uid = user_id_of(alice)
    past = utcnow() - timedelta(days=settings.notification_retention_days + 1)
    within = utcnow() - timedelta(days=settings.notification_retention_days - 1)

    def note(read_at, dispatched_at):
        n = Notification(
            user_id=uid,
            kind="profile.updated",
            title="t",
            dedupe_key=f"test-purge:{uuid.uuid4()}",
            read_at=read_at,
            dispatched_at=dispatched_at,
        )
        db.add(n)
        return n

    gone = note(past, past)
    kept = [note(past, None), note(within, within), note(None, past)]
    db.commit()
    old_id, old_task, gone_id = old.id, old.steps[0].task_id, gone.id
    kept_ids = [n.id for n in kept]
    recent_id, running_id = recent.id, running.id
    celery_app.backend.store_result(old_task, {"x": 1}, "SUCCESS")
    kept_task = recent.steps[0].task_id
    celery_app.backend.store_result(kept_task, {"x": 1}, "SUCCESS")

    first = purge_tasks.purge_records.delay().get(timeout=60)["purged"]
    assert first["jobs"] >= 1 and first["notifications"] >= 1
    db.expire_all()
    assert db.get(Job, old_id) is None
    assert (
        db.execute(
            select(func.count()).select_from(JobStep).where(JobStep.job_id == old_id)
        ).scalar_one()
        == 0
    )
    assert db.get(Job, recent_id) is not None and db.get(Job, running_id) is not None
    assert db.get(Notification, gone_id) is None
    assert all(db.get(Notification, n) is not None for n in kept_ids)
    assert celery_app.backend.get_task_meta(old_task)["status"] == "PENDING"  # forgotten
    assert celery_app.backend.get_task_meta(kept_task)["status"] == "SUCCESS"

    second = purge_tasks.purge_records.delay().get(timeout=60)["purged"]
    assert set(second.values()) == {0}


def test_the_beat_table():
    registered = set(celery_app.tasks)
    for name, entry in SCHEDULE.items():
        assert entry["task"] in registered, name
        expires = entry["options"]["expires"]
        assert 0 < expires <= entry["schedule"], name
    assert SCHEDULE["beat-heartbeat"]["schedule"] == 30


def test_a_periodic_task_skips_while_another_run_holds_its_lock():
    with singleton("purge_records", ttl_s=30) as acquired:
        assert acquired
        assert purge_tasks.purge_records.delay().get(timeout=30) == {
            "skipped": "another purge is running"
        }
    with singleton("purge_records", ttl_s=30) as again:
        assert again
