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
