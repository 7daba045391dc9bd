"""Outgoing webhooks end to end: a real worker fans notifications out and POSTs them to a
receiver on 127.0.0.1 that verifies every signature with svix's verifier."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime

import pytest
from sqlalchemy import func, select

from market import notifications
from market.models import Notification, WebhookDelivery
from tests.support.environment import worker_environment
from tests.support.poll import wait_for
from tests.support.webhook_receiver import Receiver, Reply, running
from workers.notifications import dispatch_pending, send_deliveries

pytestmark = pytest.mark.usefixtures("worker", "beat")

BASE = "/api/v1/webhook-endpoints"
SHORT_SCHEDULE = ",".join(["0.2"] * 8)


@pytest.fixture(autouse=True)
def worker_env() -> Iterator[Callable[..., None]]:
    """Change the worker's settings (it runs in this process) for one test; restored after."""
    with ExitStack() as changes:

        def change(**values: str) -> None:
            changes.enter_context(worker_environment(values))

        change(WEBHOOK_RETRY_SCHEDULE=SHORT_SCHEDULE)
        yield change


@pytest.fixture()
def beat(celery_app) -> Iterator[None]:
    """Stands in for celery beat: sends `notifications.retry_deliveries` every 0.2 s."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.2):
            celery_app.send_task("notifications.retry_deliveries")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with running() as r:
        yield r


def register(client, headers, receiver: Receiver, events=("profile.updated",)) -> str:
    answer = client.post(
        BASE, json={"url": receiver.url(), "events": list(events)}, headers=headers
    )
    assert answer.status_code == 201, answer.get_json()
    receiver.secret = answer.get_json()["secret"]
    return answer.get_json()["id"]


def notify(app, user_id, kind="profile.updated", **data) -> None:
    """Record a notification as a workflow step would, then send the dispatch step."""
    with app.extensions["spartan.sessions"]() as session:
        notifications.record(
            session,
            user_id=user_id,
            kind=kind,
            title="Something happened",
            dedupe_key=f"test:{uuid.uuid4()}",
            data=data,
        )
        session.commit()
    dispatch_pending.delay()


def undispatched(db, user_id) -> int:
    db.rollback()  # a fresh snapshot on every poll
    return db.execute(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.dispatched_at.is_(None))
    ).scalar_one()


def deliveries(client, headers, endpoint: str) -> list[dict]:
    answer = client.get(f"{BASE}/{endpoint}/deliveries?page_size=100", headers=headers)
    assert answer.status_code == 200
    return answer.get_json()


def settled(client, headers, endpoint: str, count: int = 1) -> list[dict]:
    """Wait until the endpoint has `count` deliveries, none of them pending."""
    return wait_for(
        lambda: (
            (rows := deliveries(client, headers, endpoint))
            and len(rows) == count
            and all(d["state"] != "pending" for d in rows)
            and rows
        ),
        what=f"{count} settled deliveries",
    )


def test_an_event_reaches_its_subscribers_signed(client, alice, bob, user_id_of):
    with running() as mine, running() as other_kind, running() as bobs:
        endpoint = register(client, alice, mine)
        register(client, alice, other_kind, events=("refund.issued",))
        register(client, bob, bobs)

        notify(client.application, user_id_of(alice), field="bio")
        [done] = settled(client, alice, endpoint)

        [seen] = mine.requests
        assert seen.verified is True
        assert seen.webhook_id == done["id"]
        assert seen.headers["Content-Type"] == "application/json"
        assert seen.payload["type"] == "profile.updated"
        assert seen.payload["data"] == {
            "field": "bio",
            "notification_id": done["notification_id"],
            "user_id": str(user_id_of(alice)),
        }
        datetime.fromisoformat(seen.payload["timestamp"])
        assert done["state"] == "succeeded"
        [attempt] = done["attempts"]
        assert attempt["status_code"] == 200 and attempt["trigger"] == "initial"
        assert attempt["error"] is None and attempt["duration_ms"] >= 0
        # Fan-out is one transaction: nothing else was, or will be, created for this event.
        assert other_kind.count() == 0 and bobs.count() == 0


def test_admin_endpoints_receive_every_users_events(client, alice, admin, make_user, user_id_of):
    other_admin = make_user(admin=True)
    with running() as admins:
        endpoint = register(client, admin, admins, events=("profile.updated", "alert.triggered"))
        try:
            notify(client.application, user_id_of(alice))
            # Alerts are written once per admin: only the endpoint owner's copy goes out.
            notify(client.application, user_id_of(other_admin), kind="alert.triggered")
            notify(client.application, user_id_of(admin), kind="alert.triggered")
            rows = settled(client, admin, endpoint, count=2)
            assert sorted(d["event_type"] for d in rows) == ["alert.triggered", "profile.updated"]
            by_type = {s.payload["type"]: s.payload["data"]["user_id"] for s in admins.requests}
            assert by_type == {
                "profile.updated": str(user_id_of(alice)),
                "alert.triggered": str(user_id_of(admin)),
            }
            assert all(s.verified is True for s in admins.requests)
        finally:
            # Admin endpoints see every user's events: keep this one out of later tests.
            client.delete(f"{BASE}/{endpoint}", headers=admin)


def test_fails_twice_then_succeeds_with_the_same_webhook_id(client, alice, receiver, user_id_of):
    endpoint = register(client, alice, receiver)
    receiver.answer(Reply(500), Reply(503))

    notify(client.application, user_id_of(alice))
    [done] = settled(client, alice, endpoint)

    assert done["state"] == "succeeded" and done["attempt_count"] == 3
    assert [s.webhook_id for s in receiver.requests] == [done["id"]] * 3
    assert all(s.verified is True for s in receiver.requests)
    assert len({s.body for s in receiver.requests}) == 1
    attempts = done["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert [a["error"] for a in attempts] == ["HTTP 500", "HTTP 503", None]
    assert [a["trigger"] for a in attempts] == ["initial", "retry", "retry"]
    assert [a["number"] for a in attempts] == [1, 2, 3]


def test_a_4xx_is_not_retried_and_a_redelivery_is_one_more_try(client, alice, receiver, user_id_of):
    endpoint = register(client, alice, receiver)
    receiver.answer(Reply(400))
    receiver.default = Reply(500)

    notify(client.application, user_id_of(alice))
    [failed] = settled(client, alice, endpoint)
    assert failed["state"] == "failed" and failed["next_attempt_at"] is None
    assert [a["status_code"] for a in failed["attempts"]] == [400]
    assert receiver.count() == 1

    # A redelivery of a finished delivery is one attempt: its 500 is not retried either.
    path = f"{BASE}/{endpoint}/deliveries/{failed['id']}"
    assert client.post(f"{path}/redeliver", headers=alice).status_code == 202
    wait_for(lambda: len(client.get(path, headers=alice).get_json()["attempts"]) == 2)
    again = client.get(path, headers=alice).get_json()
    assert again["state"] == "failed"
    assert [(a["status_code"], a["trigger"]) for a in again["attempts"]] == [
        (400, "initial"),
        (500, "manual"),
    ]
    assert [s.webhook_id for s in receiver.requests] == [failed["id"]] * 2


def test_retry_after_is_honoured(client, alice, receiver, user_id_of):
    endpoint = register(client, alice, receiver)
    receiver.answer(Reply(429, {"Retry-After": "1"}))

    notify(client.application, user_id_of(alice))
    [done] = settled(client, alice, endpoint)

    first, second = (datetime.fromisoformat(a["attempted_at"]) for a in done["attempts"])
    assert (second - first).total_seconds() >= 0.9  # the schedule alone says 0.2 s
    assert done["state"] == "succeeded"


def test_redeliver_resends_with_the_same_webhook_id(client, alice, receiver, user_id_of):
    endpoint = register(client, alice, receiver)
    notify(client.application, user_id_of(alice))
    [done] = settled(client, alice, endpoint)

    answer = client.post(f"{BASE}/{endpoint}/deliveries/{done['id']}/redeliver", headers=alice)
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["delivery_id"] == done["id"] and answer.headers["Location"] == body["status_url"]
    job = wait_for(
        lambda: (
            (j := client.get(body["status_url"], headers=alice).get_json())["state"]
            in ("succeeded", "failed")
            and j
        ),
        what="the redelivery job",
    )
    # The job's send, or a beat's retry run that got there first: either way, once.
    assert job["state"] == "succeeded" and job["result"]["attempted"] in (0, 1)
    [again] = wait_for(
        lambda: (
            (rows := deliveries(client, alice, endpoint))[0]["attempt_count"] == 2
            and rows[0]["state"] == "succeeded"
            and rows
        ),
        what="the manual attempt",
    )
    assert [a["trigger"] for a in again["attempts"]] == ["initial", "manual"]
    assert [s.webhook_id for s in receiver.requests] == [done["id"]] * 2
    assert all(s.verified is True for s in receiver.requests)

    client.patch(f"{BASE}/{endpoint}", json={"enabled": False}, headers=alice)
    refused = client.post(f"{BASE}/{endpoint}/deliveries/{done['id']}/redeliver", headers=alice)
    assert refused.status_code == 409


def test_a_loopback_host_not_allowed_is_refused_without_a_connection(
    client, alice, receiver, user_id_of, worker_env
):
    endpoint = register(client, alice, receiver)  # the app allows 127.0.0.1
    worker_env(WEBHOOK_ALLOWED_HOSTS="localhost")  # the worker, at sending time, does not

    notify(client.application, user_id_of(alice))
    [refused] = settled(client, alice, endpoint)

    assert refused["state"] == "failed"
    [attempt] = refused["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("destination refused")
    assert "127.0.0.1" in attempt["error"]
    assert receiver.connections == 0


def test_consecutive_final_failures_disable_the_endpoint_and_notify_its_owner(
    client, db, alice, user_id_of, worker_env
):
    worker_env(WEBHOOK_DISABLE_AFTER_FAILURES="2")
    with running() as broken, running() as watcher:
        broken.default = Reply(410)
        endpoint = register(client, alice, broken)
        watching = register(client, alice, watcher, events=("webhook_endpoint.disabled",))

        for _ in range(2):
            notify(client.application, user_id_of(alice))
        wait_for(
            lambda: not client.get(f"{BASE}/{endpoint}", headers=alice).get_json()["enabled"],
            what="the endpoint to be disabled",
        )
        state = client.get(f"{BASE}/{endpoint}", headers=alice).get_json()
        assert state["disabled_reason"] == "2 deliveries in a row failed"

        inbox = client.get("/api/v1/notifications", headers=alice).get_json()
        [told_owner] = [n for n in inbox if n["kind"] == "webhook_endpoint.disabled"]
        assert told_owner["data"]["endpoint_id"] == endpoint
        # The owner's other endpoint, subscribed to that event, is told as well.
        [told] = settled(client, alice, watching)
        assert watcher.requests[0].payload["data"]["endpoint_id"] == endpoint
        assert told["state"] == "succeeded"

        # A disabled endpoint gets no new deliveries.
        notify(client.application, user_id_of(alice))
        wait_for(lambda: undispatched(db, user_id_of(alice)) == 0, what="the dispatch")
        assert len(deliveries(client, alice, endpoint)) == 2
        assert broken.count() == 2


def test_every_attempt_failing_for_the_window_disables_the_endpoint(
    client, alice, receiver, user_id_of, worker_env
):
    worker_env(WEBHOOK_DISABLE_AFTER_HOURS=str(0.5 / 3600))  # half a second
    receiver.default = Reply(502)
    endpoint = register(client, alice, receiver)

    notify(client.application, user_id_of(alice))
    wait_for(
        lambda: not client.get(f"{BASE}/{endpoint}", headers=alice).get_json()["enabled"],
        what="the endpoint to be disabled",
    )
    state = client.get(f"{BASE}/{endpoint}", headers=alice).get_json()
    assert state["disabled_reason"].startswith("every attempt failed for")
    [ended] = deliveries(client, alice, endpoint)
    assert ended["state"] == "failed" and ended["last_error"].startswith("endpoint disabled")
    assert 2 <= receiver.count() <= 8


def test_dispatch_and_send_twice_deliver_once(client, db, alice, receiver, user_id_of):
    endpoint = register(client, alice, receiver)
    notify(client.application, user_id_of(alice))
    dispatch_pending.delay()
    [done] = settled(client, alice, endpoint)

    # The same send, twice more: nothing is due, nothing is sent.
    for result in [send_deliveries.delay(delivery_ids=[done["id"]]) for _ in range(2)]:
        assert result.get(timeout=10)["attempted"] == 0
    assert receiver.count() == 1
    rows = db.execute(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == uuid.UUID(endpoint))
    ).scalar_one()
    assert rows == 1


def test_a_batch_of_events_is_delivered(client, alice, receiver, user_id_of):
    endpoint = register(client, alice, receiver)
    with client.application.extensions["spartan.sessions"]() as session:
        for i in range(40):
            notifications.record(
                session,
                user_id=user_id_of(alice),
                kind="profile.updated",
                title="batch",
                dedupe_key=f"test:{uuid.uuid4()}",
                data={"i": i},
            )
        session.commit()
    result = dispatch_pending.delay(batch_size=25).get(timeout=20)
    assert result["webhook_deliveries"] >= 40

    settled(client, alice, endpoint, count=40)
    assert sorted(s.payload["data"]["i"] for s in receiver.requests) == list(range(40))
    assert len({s.webhook_id for s in receiver.requests}) == 40
    assert all(s.verified is True for s in receiver.requests)
    assert {d["state"] for d in deliveries(client, alice, endpoint)} == {"succeeded"}
