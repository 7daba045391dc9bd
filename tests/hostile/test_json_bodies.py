"""Hostile JSON bodies to every operation that reads one, taken from /api/openapi.json so
a new endpoint is covered without an edit here.

A body nested a few thousand levels deep (`[[[[…]]]]`, a few KB) makes Python's JSON parser
raise RecursionError, which neither webargs nor Flask catches: before webapp.errors handled
it, every JSON endpoint answered 500 to it. Schemathesis does not generate such bodies.
"""

from __future__ import annotations

import uuid

import pytest
from flask import Flask

DEEP = b"[" * 20_000 + b"]" * 20_000
DEEP_OBJECT = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
NOT_JSON = b'{"amount": 1'


def json_operations(app: Flask) -> list[tuple[str, str]]:
    """(method, path with its parameters filled) of each operation with a JSON body."""
    spec = app.test_client().get("/api/openapi.json").get_json()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):  # the path-level `parameters` list
                continue
            if "application/json" in (operation.get("requestBody") or {}).get("content", {}):
                filled = path
                while "{" in filled:
                    start, end = filled.index("{"), filled.index("}")
                    filled = filled[:start] + str(uuid.uuid4()) + filled[end + 1 :]
                found.append((method.upper(), filled))
    return found


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, NOT_JSON], ids=["array", "object", "cut"])
def test_every_json_endpoint_answers_400_to_a_body_it_cannot_parse(app, client, admin, body):
    operations = json_operations(app)
    assert len(operations) >= 6
    for method, path in operations:
        # If-Match: the profile's PATCH checks its precondition before reading the body.
        answer = client.open(
            path,
            method=method,
            data=body,
            headers={**admin, "If-Match": '"any"'},
            content_type="application/json",
        )
        assert answer.status_code == 400, (method, path, answer.get_data(as_text=True)[:300])
        assert answer.mimetype == "application/problem+json"


def test_the_webhook_answers_400_to_a_body_nested_too_deeply(client):
    """Before the signature is checked: the body is parsed first (its data.id is signed)."""
    answer = client.post(
        "/api/v1/advanced/webhooks/mercadopago?data.id=1&type=payment",
        data=DEEP,
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert answer.get_json()["detail"] == "The JSON body is nested too deeply."
