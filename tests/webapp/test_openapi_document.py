"""/api/openapi.json states what the server enforces and every answer it can give, in a form a
client generator can use. These are the document's rules, each read off the served document;
schemathesis (tests/hostile/test_schemathesis_live.py) then holds the server to them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from market.models import CreditPackage
from market.payments.catalogue import PACKAGE_IDS
from webapp.limits import EXEMPT_PATHS
from webapp.schemas import IDEMPOTENCY_KEY_PATTERN, http_url_pattern

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def spec(app: Flask) -> dict[str, Any]:
    return app.test_client().get("/api/openapi.json").get_json()


def operations(spec: dict[str, Any]):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(spec: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj:
        section, name = obj["$ref"].split("/")[-2:]
        obj = spec["components"][section][name]
    return obj


def test_every_operation_has_a_unique_id_and_a_tag(spec):
    ids = [op.get("operationId") for _, _, op in operations(spec)]
    assert all(ids) and len(ids) == len(set(ids)), ids
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids
    assert all(op.get("tags") for _, _, op in operations(spec))


def test_no_catch_all_answer(spec):
    assert not [(p, m) for p, m, op in operations(spec) if "default" in op["responses"]]


def test_every_answer_an_operation_can_give_is_listed_with_its_headers(spec):
    problems = []
    for path, method, op in operations(spec):
        responses = op["responses"]
        label = f"{method.upper()} {path}"
        required = {"503"} | (set() if path in EXEMPT_PATHS else {"429"})
        if op.get("security"):
            required.add("401")
        if "{" in path:
            required.add("404")
        problems += [f"{label}: no {s}" for s in sorted(required - set(responses))]
        for status, response in responses.items():
            response = resolve(spec, response)
            headers = {name: resolve(spec, h) for name, h in response.get("headers", {}).items()}
            needs = {"401": "WWW-Authenticate", "429": "Retry-After", "503": "Retry-After"}
            needs |= {"202": "Location"}
            name = needs.get(status)
            if name and not (name in headers and headers[name].get("required")):
                problems.append(f"{label}: {status} without a required {name}")
            problem = status.startswith("4") or (status == "503" and "health" not in path)
            if problem and "application/problem+json" not in response.get("content", {}):
                problems.append(f"{label}: {status} is not problem+json")
            limited = path not in EXEMPT_PATHS and status != "304"
            if limited and "$ref" not in responses[status] and "RateLimit-Remaining" not in headers:
                problems.append(f"{label}: {status} without the RateLimit headers")
    assert not problems, "\n".join(problems)


def test_package_ids_are_an_enum_of_the_packages_on_sale(spec, app):
    body = spec["components"]["schemas"]["Buy"]["properties"]["package_id"]
    assert body["enum"] == list(PACKAGE_IDS)
    with app.extensions["spartan.sessions"]() as session:
        on_sale = session.execute(
            select(CreditPackage.id).where(CreditPackage.active).order_by(CreditPackage.position)
        ).scalars()
        assert list(on_sale) == list(PACKAGE_IDS)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/advanced/credits/buy",
        "/api/v1/advanced/credits/spend",
        "/api/v1/advanced/credits/purchases/{purchase_id}/refund",
    ],
)
def test_idempotency_key_states_its_pattern_and_length(spec, path):
    (header,) = [p for p in spec["paths"][path]["post"]["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and not header["required"]
    assert header["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    }


def test_urls_and_texts_state_their_patterns(spec):
    schemas = spec["components"]["schemas"]
    url = schemas["CreateEndpoint"]["properties"]["url"]
    assert url["format"] == "uri" and url["minLength"] == 1 and url["maxLength"] == 2000
    assert url["pattern"] == http_url_pattern(require_tld=False)
    profile = schemas["ProfileChanges"]["properties"]
    assert profile["website"]["pattern"] == http_url_pattern(require_tld=True, blank_clears=True)
    assert profile["display_name"]["maxLength"] == 80 and "pattern" in profile["display_name"]
    assert schemas["UpdateEndpoint"]["minProperties"] == 1


def test_the_avatar_upload_states_its_types_and_minimum_size(spec):
    body = spec["paths"]["/api/v1/advanced/profile/avatar/upload"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]
    assert form["encoding"]["file"]["contentType"] == "image/jpeg, image/png, image/webp"
    file = resolve(spec, form["schema"])["properties"]["file"]
    assert file["format"] == "binary" and file["minLength"] == 1
    assert set(spec["paths"]["/api/v1/advanced/profile/avatar/upload"]["post"]["responses"]) >= {
        "413",
        "415",
        "422",
    }


def test_if_match_is_optional_and_412_is_its_only_failure(spec):
    for path, method in (("/api/v1/profile/me", "patch"), ("/api/v1/profile/me/privacy", "put")):
        op = spec["paths"][path][method]
        (if_match,) = [p for p in op["parameters"] if p["name"] == "If-Match"]
        assert if_match["required"] is False
        assert "412" in op["responses"] and "428" not in op["responses"]
        assert "ETag" in op["responses"]["200"]["headers"]


def test_links_lead_from_a_created_resource_and_a_started_task(spec):
    created = spec["paths"]["/api/v1/webhook-endpoints"]["post"]["responses"]["201"]["links"]
    by_id = spec["paths"]["/api/v1/webhook-endpoints/{endpoint_id}"]
    for method in ("get", "patch", "delete"):
        link = created[by_id[method]["operationId"]]
        assert link["parameters"] == {"endpoint_id": "$response.body#/id"}
    accepted = spec["paths"]["/api/v1/advanced/credits/buy"]["post"]["responses"]["202"]["links"]
    task = spec["paths"]["/api/v1/advanced/tasks/{task_id}"]["get"]["operationId"]
    assert accepted[task]["parameters"] == {"task_id": "$response.body#/task_id"}


def test_cancelling_a_task_answers_the_cancelled_job(spec):
    responses = spec["paths"]["/api/v1/advanced/tasks/{task_id}"]["delete"]["responses"]
    assert "204" not in responses
    assert resolve(spec, responses["200"]["content"]["application/json"]["schema"])
