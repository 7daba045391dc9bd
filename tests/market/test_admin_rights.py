"""Admin rights where no token is at hand (issue 15, item 1): a revoked admin, or one whose
proof expired, stops receiving every user's events and alerts.

The finding: an admin registered a webhook endpoint and never called again; other users'
`credits.purchase_approved`, `profile.updated` and `privacy.updated` events kept being queued
to the admin's URL, because fan-out trusted the `is_admin` flag of the admin's last request.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from market import manage, notifications
from market.identity import admins
from market.identity.tokens import upsert_user
from market.models import Notification, User, WebhookDelivery, WebhookEndpoint
from market.ops import alerts
from market.outbound import endpoints, sending

HOOKS = "/api/v1/webhook-endpoints"
ADMIN_ONLY = "/api/v1/advanced/cache/public-profiles"
FINDING_EVENTS = ("credits.purchase_approved", "profile.updated", "privacy.updated")


@pytest.fixture()
def register_everything(client, app):
    """Registers, as the given admin, an endpoint for the finding's events (the admin then
    never calls again). The endpoints are deleted afterwards: an admin's endpoint would
    receive the events of every later test."""
    created: list[uuid.UUID] = []

    def register(headers) -> uuid.UUID:
        answer = client.post(
            HOOKS,
            json={"url": "http://127.0.0.1:9/hooks", "events": list(FINDING_EVENTS)},
            headers=headers,
        )
        assert answer.status_code == 201, answer.get_data(as_text=True)
        created.append(uuid.UUID(answer.get_json()["id"]))
        return created[-1]

    yield register
    with app.extensions["spartan.sessions"]() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id.in_(created)))
        session.commit()


def events_of(db, user_id: uuid.UUID) -> list[Notification]:
    """One notification of each of the finding's kinds for `user_id`, flushed."""
    keys = []
    for kind in FINDING_EVENTS:
        key = f"test:{kind}:{uuid.uuid4()}"
        notifications.record(db, user_id=user_id, kind=kind, title="t", dedupe_key=key)
        keys.append(key)
    return list(db.execute(select(Notification).where(Notification.dedupe_key.in_(keys))).scalars())


def queued_to(db, endpoint_id: uuid.UUID, batch: list[Notification]) -> set[str]:
    """Fan the batch out; the kinds it queued to `endpoint_id`."""
    endpoints.fan_out(db, batch)
    ids = [n.id for n in batch]
    return set(
        db.execute(
            select(WebhookDelivery.event_type).where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.notification_id.in_(ids),
            )
        ).scalars()
    )


def an_hour_later(db, user_id: uuid.UUID) -> None:
    """Move the admin's proof to where it stands once the token's hour has passed."""
    db.execute(
        update(User)
        .where(User.id == user_id)
        .values(admin_until=datetime.now(UTC) - timedelta(seconds=1))
    )


def uid_of(headers: dict[str, str], client) -> str:
    verifier = client.application.extensions["spartan.verifier"]
    return verifier.verify(headers["Authorization"].split()[1]).uid


def test_the_admin_proof_is_the_expiry_of_the_token_that_proved_it(
    client, db, token, register_everything
):
    uid = f"u-{uuid.uuid4().hex[:12]}"
    headers = {"Authorization": f"Bearer {token(uid, admin=True, expires_in=1800)}"}
    register_everything(headers)
    user = db.execute(select(User).where(User.firebase_uid == uid)).scalar_one()
    claims_exp = client.application.extensions["spartan.verifier"].verify(
        headers["Authorization"].split()[1]
    )
    assert user.is_admin and user.admin_until == claims_exp.expires_at


def test_an_expired_admin_proof_stops_other_users_events(
    client, db, admin, bob, user_id_of, register_everything
):
    endpoint_id = register_everything(admin)
    admin_id, bob_id = user_id_of(admin), user_id_of(bob)

    # While the token that proved the rights would still be valid: every user's events.
    assert queued_to(db, endpoint_id, events_of(db, bob_id)) == set(FINDING_EVENTS)
    db.commit()

    an_hour_later(db, admin_id)
    # Before the fix these were queued to the admin's URL for ever.
    assert queued_to(db, endpoint_id, events_of(db, bob_id)) == set()
    # The admin's own events still reach the admin's own endpoint.
    assert queued_to(db, endpoint_id, events_of(db, admin_id)) == set(FINDING_EVENTS)
    db.rollback()


def test_a_delivery_queued_under_the_proof_is_not_sent_after_it(
    client, db, admin, bob, user_id_of, register_everything
):
    endpoint_id = register_everything(admin)
    admin_id, bob_id = user_id_of(admin), user_id_of(bob)
    batch = events_of(db, bob_id) + events_of(db, admin_id)
    assert queued_to(db, endpoint_id, batch) == set(FINDING_EVENTS)
    ids = list(
        db.execute(
            select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
        ).scalars()
    )
    an_hour_later(db, admin_id)  # e.g. while the deliveries waited for a retry

    claims = sending.claim_due(db, limit=50, lease=timedelta(seconds=60), ids=ids)

    own = {n.id for n in batch if n.user_id == admin_id}
    sent = {db.get(WebhookDelivery, c.delivery_id).notification_id for c in claims}
    assert sent == own
    for delivery_id in ids:
        delivery = db.get(WebhookDelivery, delivery_id)
        if delivery.notification_id not in own:
            assert delivery.state == "failed" and "admin" in delivery.last_error
    db.rollback()


def test_a_new_request_renews_the_proof_and_an_older_token_does_not_shorten_it(client, db, token):
    uid = f"u-{uuid.uuid4().hex[:12]}"
    later = token(uid, admin=True, expires_in=3000)
    earlier = token(uid, admin=True, expires_in=600)
    verifier = client.application.extensions["spartan.verifier"]

    user = upsert_user(db, verifier.verify(later))
    proof = user.admin_until
    db.execute(update(User).where(User.id == user.id).values(last_seen_at=None))
    assert upsert_user(db, verifier.verify(earlier)).admin_until == proof
    # A token without the claim ends the proof at once.
    db.execute(update(User).where(User.id == user.id).values(last_seen_at=None))
    plain = upsert_user(db, verifier.verify(token(uid)))
    assert not plain.is_admin and plain.admin_until is None
    db.rollback()


def test_no_proof_outlasts_a_firebase_token_hour(client, db, token):
    uid = f"u-{uuid.uuid4().hex[:12]}"
    verifier = client.application.extensions["spartan.verifier"]
    week = verifier.verify(token(uid, admin=True, expires_in=7 * 24 * 3600))
    user = upsert_user(db, week)
    assert user.admin_until is not None
    assert user.admin_until <= datetime.now(UTC) + admins.TOKEN_LIFETIME
    db.rollback()


def test_revoke_admin_stops_everything_at_once(
    client, db, admin, bob, user_id_of, register_everything
):
    endpoint_id = register_everything(admin)
    admin_id, bob_id = user_id_of(admin), user_id_of(bob)
    queued = events_of(db, bob_id)
    assert queued_to(db, endpoint_id, queued) == set(FINDING_EVENTS)
    db.commit()
    assert client.delete(ADMIN_ONLY, headers=admin).status_code == 204

    assert manage.main(["revoke-admin", uid_of(admin, client)]) == 0

    db.expire_all()
    states = db.execute(
        select(WebhookDelivery.state, WebhookDelivery.last_error).where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.notification_id.in_([n.id for n in queued]),
        )
    ).all()
    assert states and all(s == "failed" and "revoked" in e for s, e in states)
    assert queued_to(db, endpoint_id, events_of(db, bob_id)) == set()
    db.commit()
    # The same, still valid token no longer opens admin endpoints...
    assert client.delete(ADMIN_ONLY, headers=admin).status_code == 403
    # ...nor does the request bring the rights back to fan-out.
    assert queued_to(db, endpoint_id, events_of(db, bob_id)) == set()
    assert queued_to(db, endpoint_id, events_of(db, admin_id)) == set(FINDING_EVENTS)
    db.commit()

    # grant-admin lifts the revocation: the claim counts again, and the list keeps alerts on.
    assert manage.main(["grant-admin", str(admin_id)]) == 0
    assert client.delete(ADMIN_ONLY, headers=admin).status_code == 204
    an_hour_later(db, admin_id)
    assert queued_to(db, endpoint_id, events_of(db, bob_id)) == set(FINDING_EVENTS)
    db.rollback()
    assert manage.main(["revoke-admin", str(admin_id)]) == 0


def test_revoke_admin_of_an_unknown_user_fails_cleanly(capsys):
    assert manage.main(["revoke-admin", f"nobody-{uuid.uuid4().hex}"]) == 1
    assert "no user" in capsys.readouterr().err


def test_alerts_reach_only_admins_whose_rights_hold(db, make_user, user_id_of):
    current, expired, listed, revoked = (user_id_of(make_user(admin=True)) for _ in range(4))
    an_hour_later(db, expired)
    an_hour_later(db, listed)
    admins.grant(db, str(listed))
    admins.revoke(db, str(revoked))
    change = alerts.Change(
        "error_rate", "alert.triggered", 0.5, 0.05, datetime.now(UTC) - timedelta(days=3650)
    )
    alerts._notify_admins(db, change)
    told = set(
        db.execute(
            select(Notification.user_id).where(
                Notification.kind == "alert.triggered",
                Notification.user_id.in_([current, expired, listed, revoked]),
            )
        ).scalars()
    )
    assert told == {current, listed}
    db.rollback()
