"""Rate limits: per caller, stricter on money and uploads, 429 problem+json with its headers."""

from __future__ import annotations

import uuid

import pytest

TASKS = "/api/v1/advanced/tasks"
BUY = "/api/v1/advanced/credits/buy"
SPEND = "/api/v1/advanced/credits/spend"
UPLOAD = "/api/v1/advanced/profile/avatar/upload"
MP_WEBHOOK = "/api/v1/advanced/webhooks/mercadopago"


def _address() -> dict[str, str]:
    """A client address of this test alone (anonymous callers are limited per address)."""
    n = uuid.uuid4().int
    return {"REMOTE_ADDR": f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"}


def _assert_429(response) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 429
    assert body["type"].endswith("/too-many-requests")
    assert 0 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > 0


def test_default_limit_is_per_user_and_answers_429_with_headers(app_with, alice, bob):
    client = app_with(rate_limit_default="3/minute").test_client()
    answers = [client.get(TASKS, headers=alice) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    assert answers[0].headers["RateLimit-Limit"] == "3"
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["2", "1", "0"]
    _assert_429(client.get(TASKS, headers=alice))
    # Another user has a budget of their own.
    assert client.get(TASKS, headers=bob).status_code == 200


def test_anonymous_callers_are_limited_per_address(app_with):
    client = app_with(rate_limit_default="2/minute").test_client()
    first, second = _address(), _address()
    assert [client.get(TASKS, environ_base=first).status_code for _ in range(2)] == [401, 401]
    _assert_429(client.get(TASKS, environ_base=first))
    assert client.get(TASKS, environ_base=second).status_code == 401


@pytest.mark.parametrize(
    ("setting", "path", "send"),
    [
        ("rate_limit_buy", BUY, {"json": {"package_id": "no-such-package"}}),
        ("rate_limit_spend", SPEND, {"json": {}}),
        ("rate_limit_upload", UPLOAD, {"data": {}}),
    ],
)
def test_stricter_limits_count_requests_that_fail(app_with, make_user, setting, path, send):
    client = app_with(**{setting: "2/minute"}).test_client()
    user = make_user()
    answers = [client.post(path, headers=user, **send) for _ in range(2)]
    assert answers[0].status_code != 404, f"{path} is not routed (its blueprint is missing)"
    # The endpoint refuses these (4xx): they still count.
    assert all(400 <= r.status_code < 500 and r.status_code != 429 for r in answers), [
        (r.status_code, r.get_data(as_text=True)[:200]) for r in answers
    ]
    _assert_429(client.post(path, headers=user, **send))
    # Only that endpoint is limited so tightly; the same user can still read.
    assert client.get(TASKS, headers=user).status_code == 200


def test_mercadopago_webhook_is_exempt(app_with):
    client = app_with(rate_limit_default="1/minute").test_client()
    address = _address()
    answers = [client.post(MP_WEBHOOK, json={}, environ_base=address) for _ in range(4)]
    assert all(r.status_code != 429 for r in answers), [r.status_code for r in answers]
    assert "X-RateLimit-Limit" not in answers[-1].headers


def test_limits_survive_a_dead_redis(app_with, alice):
    client = app_with(redis_url="redis://127.0.0.1:1/0", rate_limit_default="2/minute")
    answers = [client.test_client().get(TASKS, headers=alice) for _ in range(3)]
    # Counted in memory instead: still limited, never a 500.
    assert [r.status_code for r in answers] == [200, 200, 429]
