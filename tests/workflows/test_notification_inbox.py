"""The notification inbox end to end: one user's six kinds of event, each caused through the
real API with a real worker and the MercadoPago sandbox, reach that user's inbox (and nobody
else's) and that user's outgoing webhook endpoint, signed. No beat runs here: profile and
privacy changes are sent by the dispatch their request sends after its commit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from market.models import Notification
from tests.support import images
from tests.support.mercadopago import MercadoPagoSandbox, buy, finished_job, wait_status
from tests.support.poll import wait_for
from tests.support.webhook_receiver import Receiver, running

pytestmark = pytest.mark.usefixtures("worker")

INBOX = "/api/v1/notifications"
ENDPOINTS = "/api/v1/webhook-endpoints"
ME = "/api/v1/profile/me"
PRIVACY = "/api/v1/profile/me/privacy"
UPLOAD = "/api/v1/advanced/profile/avatar/upload"
KINDS = (
    "credits.purchase_approved",
    "payment.failed",
    "profile.updated",
    "privacy.updated",
    "avatar.updated",
    "refund.issued",
)

Headers = dict[str, str]


def inbox(client: FlaskClient, headers: Headers, query: str = "") -> list[dict[str, Any]]:
    answer = client.get(f"{INBOX}?page_size=100{query}", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def arrives(client: FlaskClient, headers: Headers, kind: str) -> dict[str, Any]:
    """Wait for the user's notification of `kind`; the next event starts only after it, so
    the inbox order is the order the events happened in."""
    return wait_for(
        lambda: next((n for n in inbox(client, headers) if n["kind"] == kind), None),
        timeout=30,
        what=f"a {kind} notification",
    )


def approved_purchase(
    client: FlaskClient, headers: Headers, mp_sandbox: MercadoPagoSandbox
) -> dict[str, Any]:
    checkout = buy(client, headers)
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_status(client.application, checkout["purchase_id"], "approved")
    return {"purchase_id": checkout["purchase_id"], "payment_id": payment["id"]}


def rejected_purchase(
    client: FlaskClient, headers: Headers, mp_sandbox: MercadoPagoSandbox
) -> dict[str, Any]:
    checkout = buy(client, headers)
    payment = mp_sandbox.pay(checkout["preference_id"], status="rejected")
    wait_status(client.application, checkout["purchase_id"], "rejected")
    return {"purchase_id": checkout["purchase_id"], "payment_id": payment["id"]}


def change_profile(client: FlaskClient, headers: Headers) -> None:
    etag = client.get(ME, headers=headers).headers["ETag"]
    answer = client.patch(
        ME, json={"display_name": "Leónidas"}, headers={**headers, "If-Match": etag}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def change_privacy(client: FlaskClient, headers: Headers) -> None:
    settings = client.get(PRIVACY, headers=headers).get_json()
    settings.pop("updated_at")
    answer = client.put(PRIVACY, json={**settings, "show_email": True}, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)


def upload_avatar(client: FlaskClient, headers: Headers) -> str:
    answer = client.post(
        UPLOAD,
        headers=headers,
        **images.multipart(images.png_with_transparency(), "a.png", "image/png"),
    )
    assert answer.status_code == 202, answer.get_data(as_text=True)
    job = finished_job(client, headers, answer.get_json()["status_url"])
    assert job["state"] == "succeeded", job
    return answer.get_json()["media_id"]


def refund(client: FlaskClient, admin: Headers, purchase_id: str) -> None:
    url = f"/api/v1/advanced/credits/purchases/{purchase_id}/refund"
    answer = client.post(url, headers=admin)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    wait_status(client.application, purchase_id, "refunded")


def register_endpoint(client: FlaskClient, headers: Headers, receiver: Receiver) -> str:
    answer = client.post(
        ENDPOINTS, json={"url": receiver.url(), "events": list(KINDS)}, headers=headers
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    receiver.secret = answer.get_json()["secret"]
    return answer.get_json()["id"]


def test_six_events_reach_the_inbox_and_the_webhook_of_their_user_only(
    client: FlaskClient,
    make_user: Callable[..., Headers],
    admin: Headers,
    user_id_of: Callable[[Headers], uuid.UUID],
    mp_sandbox: MercadoPagoSandbox,
) -> None:
    user, stranger = make_user(), make_user()
    user_id = str(user_id_of(user))
    with running() as receiver:
        register_endpoint(client, user, receiver)

        paid = approved_purchase(client, user, mp_sandbox)
        arrives(client, user, "credits.purchase_approved")
        failed = rejected_purchase(client, user, mp_sandbox)
        arrives(client, user, "payment.failed")
        change_profile(client, user)
        arrives(client, user, "profile.updated")
        change_privacy(client, user)
        arrives(client, user, "privacy.updated")
        media_id = upload_avatar(client, user)
        arrives(client, user, "avatar.updated")
        refund(client, admin, paid["purchase_id"])
        arrives(client, user, "refund.issued")

        notes = inbox(client, user)
        assert [n["kind"] for n in notes] == list(reversed(KINDS))  # newest first
        by_kind = {n["kind"]: n for n in notes}
        assert by_kind["credits.purchase_approved"]["data"] == {
            "purchase_id": paid["purchase_id"],
            "payment_id": paid["payment_id"],
            "credits": 100,
        }
        assert by_kind["payment.failed"]["data"] == {
            "purchase_id": failed["purchase_id"],
            "payment_id": failed["payment_id"],
            "status": "rejected",
        }
        profile_data = by_kind["profile.updated"]["data"]
        assert profile_data["fields"] == ["display_name"] and profile_data["version"] >= 2
        assert by_kind["privacy.updated"]["data"] == {"changed": ["show_email"]}
        assert by_kind["avatar.updated"]["data"] == {"media_id": media_id}
        # Written by the refund step or by MercadoPago's own "refunded" notification, whichever
        # commits first (one dedupe key): the purchase is what both name.
        assert by_kind["refund.issued"]["data"]["purchase_id"] == paid["purchase_id"]
        assert all(n["read"] is False and n["title"] for n in notes)

        # The same six events reach the user's endpoint, each signed and sent once.
        wait_for(lambda: receiver.count() >= len(KINDS), timeout=30, what="six deliveries")
        seen = receiver.requests
        assert all(s.verified is True for s in seen), [s.verified for s in seen]
        assert sorted(s.payload["type"] for s in seen) == sorted(KINDS)
        assert len({s.webhook_id for s in seen}) == len(KINDS)
        for s in seen:
            note = by_kind[s.payload["type"]]
            assert s.payload["data"] == {
                **note["data"],
                "notification_id": note["id"],
                "user_id": user_id,
            }

    # Nobody else sees them, nor can read them.
    assert inbox(client, stranger) == []
    some = notes[0]["id"]
    assert client.get(f"{INBOX}/{some}", headers=stranger).status_code == 404
    assert client.post(f"{INBOX}/{some}/read", headers=stranger).status_code == 404
    assert client.post(f"{INBOX}/read-all", headers=stranger).get_json() == {"marked_read": 0}

    # Unread filter, read one, read all.
    assert [n["id"] for n in inbox(client, user, "&unread=true")] == [n["id"] for n in notes]
    answer = client.post(f"{INBOX}/{some}/read", headers=user)
    assert answer.status_code == 200 and answer.get_json()["read"] is True
    unread = client.get(f"{INBOX}?unread=true", headers=user)
    assert [n["id"] for n in unread.get_json()] == [n["id"] for n in notes[1:]]
    assert json.loads(unread.headers["X-Pagination"])["total"] == len(KINDS) - 1
    marked = client.post(f"{INBOX}/read-all", headers=user)
    assert marked.get_json() == {"marked_read": len(KINDS) - 1}
    assert inbox(client, user, "&unread=true") == []
    assert [n["read"] for n in inbox(client, user)] == [True] * len(KINDS)


def test_a_profile_change_is_dispatched_by_its_request_not_by_beat(
    client: FlaskClient, db: Any, alice: Headers, user_id_of: Callable[[Headers], uuid.UUID]
) -> None:
    """The request sends `dispatch_pending` after its commit: the row is fanned out (its
    `dispatched_at` set) by the worker alone, with no beat running in this test."""
    user_id = user_id_of(alice)
    change_profile(client, alice)
    change_privacy(client, alice)

    def dispatched() -> list[str] | None:
        db.rollback()  # a fresh snapshot on every poll
        rows = db.execute(
            select(Notification.kind).where(
                Notification.user_id == user_id, Notification.dispatched_at.is_not(None)
            )
        ).scalars()
        kinds = sorted(rows)
        return kinds if len(kinds) == 2 else None

    assert wait_for(dispatched, what="both notifications dispatched") == [
        "privacy.updated",
        "profile.updated",
    ]
