"""The notification inbox: newest first, paginated, unread filter, read, read-all, isolation."""

from __future__ import annotations

import json
import uuid

from market import notifications

BASE = "/api/v1/notifications"


def add(app, user_id, n: int, kind: str = "profile.updated") -> list[str]:
    """Record `n` notifications for the user (committed), oldest first; returns their keys."""
    keys = []
    with app.extensions["spartan.sessions"]() as session:
        for i in range(n):
            key = f"test:{uuid.uuid4()}"
            notifications.record(
                session,
                user_id=user_id,
                kind=kind,
                title=f"event {i}",
                dedupe_key=key,
                data={"i": i},
            )
            # Separate transactions, so created_at (now()) orders them.
            session.commit()
            keys.append(key)
    return keys


def test_inbox_is_newest_first_and_paginated(client, alice, user_id_of):
    add(client.application, user_id_of(alice), 5)

    first = client.get(f"{BASE}?page=1&page_size=2", headers=alice)
    assert first.status_code == 200
    assert [n["title"] for n in first.get_json()] == ["event 4", "event 3"]
    page = json.loads(first.headers["X-Pagination"])
    assert page["total"] == 5 and page["total_pages"] == 3
    last = client.get(f"{BASE}?page=3&page_size=2", headers=alice).get_json()
    assert [n["title"] for n in last] == ["event 0"]
    one = last[0]
    assert one["kind"] == "profile.updated" and one["data"] == {"i": 0}
    assert one["read"] is False and one["read_at"] is None


def test_read_one_then_unread_filter(client, alice, user_id_of):
    add(client.application, user_id_of(alice), 3)
    items = client.get(BASE, headers=alice).get_json()

    answer = client.post(f"{BASE}/{items[0]['id']}/read", headers=alice)
    assert answer.status_code == 200
    assert answer.get_json()["read"] is True
    read_at = answer.get_json()["read_at"]
    # Idempotent: reading again keeps the first read time.
    again = client.post(f"{BASE}/{items[0]['id']}/read", headers=alice).get_json()
    assert again["read_at"] == read_at

    unread = client.get(f"{BASE}?unread=true", headers=alice)
    assert [n["id"] for n in unread.get_json()] == [items[1]["id"], items[2]["id"]]
    assert json.loads(unread.headers["X-Pagination"])["total"] == 2
    assert len(client.get(f"{BASE}?unread=false", headers=alice).get_json()) == 3


def test_read_all_marks_only_the_callers(client, alice, bob, user_id_of):
    add(client.application, user_id_of(alice), 3)
    add(client.application, user_id_of(bob), 2)

    answer = client.post(f"{BASE}/read-all", headers=alice)
    assert answer.status_code == 200 and answer.get_json() == {"marked_read": 3}
    assert client.post(f"{BASE}/read-all", headers=alice).get_json() == {"marked_read": 0}
    assert client.get(f"{BASE}?unread=true", headers=alice).get_json() == []
    assert len(client.get(f"{BASE}?unread=true", headers=bob).get_json()) == 2


def test_a_user_sees_only_their_own(client, alice, bob, user_id_of):
    add(client.application, user_id_of(alice), 1)
    theirs = client.get(BASE, headers=alice).get_json()[0]["id"]

    assert client.get(BASE, headers=bob).get_json() == []
    for answer in (
        client.get(f"{BASE}/{theirs}", headers=bob),
        client.post(f"{BASE}/{theirs}/read", headers=bob),
    ):
        assert answer.status_code == 404
        assert answer.headers["Content-Type"] == "application/problem+json"
    assert client.get(f"{BASE}/{theirs}", headers=alice).get_json()["read"] is False
    assert client.post(f"{BASE}/{uuid.uuid4()}/read", headers=alice).status_code == 404


def test_inbox_needs_a_token(client):
    assert client.get(BASE).status_code == 401
    assert client.post(f"{BASE}/read-all").status_code == 401
