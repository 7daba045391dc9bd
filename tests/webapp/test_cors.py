"""CORS (flask-cors): real preflights and calls from FRONTEND_URL's origins, and refusals."""

from __future__ import annotations

import pytest

ME = "/api/v1/advanced/credits/me"
TASKS = "/api/v1/advanced/tasks"
MP_WEBHOOK = "/api/v1/advanced/webhooks/mercadopago"
FRONT = "https://app.spartan.test"
OTHER_FRONT = "http://localhost:5173"
STRANGER = "https://evil.example"
SENT_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key")
EXPOSED = {
    "etag",
    "location",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-pagination",
    "link",  # a list's next page, for a script that follows it
    "x-next-cursor",
}


@pytest.fixture()
def browser_client(app_with):
    return app_with(cors_origins=(FRONT, OTHER_FRONT)).test_client()


def _preflight(client, path, origin, method="GET", headers=SENT_HEADERS):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": ", ".join(h.lower() for h in headers),
        },
    )


def _cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def _listed(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


@pytest.mark.parametrize("origin", [FRONT, OTHER_FRONT])
def test_preflight_from_a_frontend_origin_allows_the_api_headers(browser_client, origin):
    answer = _preflight(browser_client, ME, origin)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert _listed(answer.headers["Access-Control-Allow-Headers"]) == {
        h.lower() for h in SENT_HEADERS
    }
    assert "get" in _listed(answer.headers["Access-Control-Allow-Methods"])
    assert answer.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "origin" in _listed(answer.headers["Vary"])


def test_preflight_for_a_write_with_if_match_and_idempotency_key(browser_client):
    answer = _preflight(
        browser_client, "/api/v1/profile/me", FRONT, "PATCH", ("If-Match", "Content-Type")
    )
    assert answer.headers["Access-Control-Allow-Origin"] == FRONT
    assert "PATCH" in answer.headers["Access-Control-Allow-Methods"]
    answer = _preflight(
        browser_client, "/api/v1/advanced/credits/buy", FRONT, "POST", ("Idempotency-Key",)
    )
    assert _listed(answer.headers["Access-Control-Allow-Headers"]) == {"idempotency-key"}


def test_preflight_from_another_origin_is_refused(browser_client):
    answer = _preflight(browser_client, ME, STRANGER)
    assert _cors_headers(answer) == {}
    # A look-alike of an allowed origin is another origin.
    for lookalike in (FRONT + ".evil.example", FRONT + ":8443", "http://app.spartan.test"):
        assert _cors_headers(_preflight(browser_client, ME, lookalike)) == {}, lookalike


def test_unknown_request_headers_are_not_allowed(browser_client):
    answer = _preflight(browser_client, ME, FRONT, headers=("Authorization", "X-Admin-Override"))
    assert _listed(answer.headers["Access-Control-Allow-Headers"]) == {"authorization"}


def test_a_call_from_the_frontend_exposes_the_headers_scripts_read(browser_client, alice):
    answer = browser_client.get(ME, headers={**alice, "Origin": FRONT})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == FRONT
    assert _listed(answer.headers["Access-Control-Expose-Headers"]) >= EXPOSED
    assert "origin" in _listed(answer.headers["Vary"])
    # The same call from a stranger's page: answered, but the browser keeps it from the script.
    stranger = browser_client.get(ME, headers={**alice, "Origin": STRANGER})
    assert stranger.status_code == 200 and _cors_headers(stranger) == {}


def test_errors_and_rate_limits_reach_the_frontend_script(app_with, alice):
    client = app_with(cors_origins=(FRONT,), rate_limit_default="2/minute").test_client()
    unauthorised = client.get(ME, headers={"Origin": FRONT})
    assert unauthorised.status_code == 401
    assert unauthorised.headers["Access-Control-Allow-Origin"] == FRONT
    answers = [client.get(TASKS, headers={**alice, "Origin": FRONT}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].headers["Access-Control-Allow-Origin"] == FRONT
    assert "retry-after" in _listed(answers[-1].headers["Access-Control-Expose-Headers"])


def test_preflights_are_not_rate_limited(app_with):
    client = app_with(cors_origins=(FRONT,), rate_limit_default="1/minute").test_client()
    answers = [_preflight(client, ME, FRONT) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.headers["Access-Control-Allow-Origin"] == FRONT for a in answers)


def test_requests_without_origin_get_no_cors_headers(browser_client, alice):
    answer = browser_client.get(ME, headers=alice)
    assert answer.status_code == 200 and _cors_headers(answer) == {}


@pytest.mark.parametrize("path", [MP_WEBHOOK, MP_WEBHOOK + "/", "/metrics"])
def test_mercadopago_webhook_and_metrics_send_no_cors_headers(browser_client, path):
    assert _cors_headers(_preflight(browser_client, path, FRONT, "POST")) == {}
    assert _cors_headers(browser_client.post(path, json={}, headers={"Origin": FRONT})) == {}
    assert _cors_headers(browser_client.get(path, headers={"Origin": FRONT})) == {}


def test_the_default_app_allows_the_configured_frontend(client, settings):
    (origin,) = settings.cors_origins
    answer = _preflight(client, ME, origin)
    assert answer.headers["Access-Control-Allow-Origin"] == origin
