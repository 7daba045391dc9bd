"""Every error is problem+json; the OpenAPI document and Swagger UI are served."""

from __future__ import annotations

import pytest
from flask import Flask


@pytest.fixture()
def crashing_app(app_with) -> Flask:
    other = app_with()
    other.config["TESTING"] = False  # as in production: the error handler answers

    @other.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals: password=hunter2")

    return other


def _is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.data
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    return body


def test_unknown_path_is_a_problem(client):
    _is_problem(client.get("/api/v1/nowhere"), 404)


def test_wrong_method_is_a_problem(client):
    _is_problem(client.put("/api/v1/advanced/health"), 405)


def test_bad_path_parameter_is_a_problem(client, alice):
    _is_problem(client.get("/api/v1/advanced/tasks/not-a-uuid", headers=alice), 404)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-token", "Bearer a.b.c"],
)
def test_missing_or_malformed_credentials_are_401(client, header):
    headers = {"Authorization": header} if header else {}
    body = _is_problem(client.get("/api/v1/advanced/tasks", headers=headers), 401)
    assert "detail" in body


def test_a_crash_is_a_500_problem_without_internals(crashing_app):
    response = crashing_app.test_client().get("/boom")
    body = _is_problem(response, 500)
    assert "hunter2" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert body["title"] == "Internal Server Error"


def test_openapi_document_and_docs(client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/advanced/tasks/{task_id}" in spec["paths"]
    assert "bearerAuth" in spec["components"]["securitySchemes"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert b"swagger" in docs.data.lower()


# Headers each error status requires (RFC 9110, RFC 6585) ---------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/v1/advanced/health", {"GET"}),
        ("TRACE", "/api/v1/advanced/credits/buy", {"POST"}),
        ("POST", "/api/v1/profile/me", {"GET", "PATCH"}),
    ],
)
def test_a_405_lists_the_allowed_methods(client, method, path, allowed):
    response = client.open(path, method=method)
    _is_problem(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= allowed


def test_every_401_carries_a_bearer_challenge(client):
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        response = client.get("/api/v1/advanced/credits/me", headers=headers)
        _is_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_a_refused_mercadopago_notification_names_its_scheme(client):
    response = client.post("/api/v1/advanced/webhooks/mercadopago", json={"type": "payment"})
    _is_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("x-signature ")


def test_a_503_says_when_to_retry(app_with, alice):
    """The database unreachable (nothing listens on port 9): 503 with Retry-After."""
    down = app_with(database_url="postgresql+psycopg://postgres@127.0.0.1:9/none")
    response = down.test_client().get("/api/v1/advanced/credits/transactions", headers=alice)
    _is_problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0


def test_a_429_says_when_to_retry(app_with, alice):
    limited = app_with(rate_limit_default="1/minute").test_client()
    limited.get("/api/v1/advanced/credits/packages", headers=alice)
    response = limited.get("/api/v1/advanced/credits/packages", headers=alice)
    _is_problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 0
    assert response.headers["RateLimit-Limit"] == "1"
