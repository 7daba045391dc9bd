"""Webhook endpoint registration and management (no sending here: tests/workers covers it)."""

from __future__ import annotations

import uuid

BASE = "/api/v1/webhook-endpoints"
URL = "http://127.0.0.1:9/hooks"  # never called by these tests


def register(client, headers, url=URL, events=("profile.updated",), **extra):
    return client.post(BASE, json={"url": url, "events": list(events), **extra}, headers=headers)


def test_the_secret_is_shown_once(client, alice, user_id_of):
    created = register(client, alice, description="my shop")
    assert created.status_code == 201
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["url"] == URL and body["events"] == ["profile.updated"]
    assert body["enabled"] is True and body["description"] == "my shop"
    assert body["owner_id"] == str(user_id_of(alice))

    listed = client.get(BASE, headers=alice).get_json()
    assert [e["id"] for e in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in client.get(f"{BASE}/{body['id']}", headers=alice).get_json()
    # Two endpoints never share a secret.
    assert register(client, alice).get_json()["secret"] != body["secret"]


def test_a_refused_destination_is_a_422_problem(client, alice, app_with):
    strict = app_with(webhook_allowed_hosts=frozenset()).test_client()
    for url in (URL, "http://localhost:9/hooks", "http://10.1.2.3/hooks", "http://[::1]:9/"):
        answer = register(strict, alice, url=url)
        assert answer.status_code == 422, url
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.get_json()["type"].endswith("/destination-refused")
    assert client.get(BASE, headers=alice).get_json() == []


def test_bad_registrations_are_refused(client, alice, admin):
    assert register(client, alice, url="ftp://127.0.0.1/x").status_code == 422
    assert register(client, alice, events=()).status_code == 422
    assert register(client, alice, events=("no.such",)).status_code == 422
    refused = register(client, alice, events=("alert.triggered",))
    assert refused.status_code == 422 and "administrators" in refused.get_json()["detail"]
    assert register(client, admin, events=("alert.triggered",)).status_code == 201


def test_other_users_get_404(client, alice, bob):
    endpoint = register(client, alice).get_json()["id"]
    for method, path in (
        ("get", f"{BASE}/{endpoint}"),
        ("patch", f"{BASE}/{endpoint}"),
        ("delete", f"{BASE}/{endpoint}"),
        ("get", f"{BASE}/{endpoint}/deliveries"),
        ("post", f"{BASE}/{endpoint}/deliveries/{uuid.uuid4()}/redeliver"),
    ):
        answer = getattr(client, method)(path, headers=bob, json={"enabled": False})
        assert answer.status_code == 404, (method, path)
    assert client.get(BASE, headers=bob).get_json() == []
    assert client.get(f"{BASE}/{endpoint}", headers=alice).get_json()["enabled"] is True


def test_an_admin_sees_and_manages_every_endpoint(client, alice, admin):
    endpoint = register(client, alice).get_json()["id"]
    assert endpoint in [e["id"] for e in client.get(BASE, headers=admin).get_json()]
    assert client.get(f"{BASE}/{endpoint}", headers=admin).status_code == 200
    # What alice's endpoint may receive is hers to have, whoever edits it.
    alerts = {"events": ["alert.resolved"]}
    assert client.patch(f"{BASE}/{endpoint}", json=alerts, headers=admin).status_code == 422
    assert client.delete(f"{BASE}/{endpoint}", headers=admin).status_code == 204


def test_disable_enable_change_and_delete(client, alice):
    endpoint = register(client, alice).get_json()["id"]
    path = f"{BASE}/{endpoint}"

    off = client.patch(path, json={"enabled": False}, headers=alice).get_json()
    assert off["enabled"] is False and off["disabled_reason"] == "disabled by its owner"
    on = client.patch(path, json={"enabled": True}, headers=alice).get_json()
    assert on["enabled"] is True and on["disabled_at"] is None

    changed = client.patch(
        path, json={"events": ["refund.issued", "avatar.updated"]}, headers=alice
    ).get_json()
    assert changed["events"] == ["avatar.updated", "refund.issued"]
    assert client.patch(path, json={}, headers=alice).status_code == 422
    assert client.get(f"{path}/deliveries", headers=alice).get_json() == []

    assert client.delete(path, headers=alice).status_code == 204
    assert client.get(path, headers=alice).status_code == 404
