"""Schemathesis against /api/openapi.json: every operation, as an anonymous caller, a fresh
user and an admin, with data that fits the document (positive) and data that does not
(negative). No 5xx; every status code, content type, header and body is the one documented.

The document is held to its explicit responses: the catch-all `default` flask-smorest adds
to every operation is dropped here, or any status would conform. The generated data, the
examples and their order are fixed (derandomize), so a failure reproduces.

Checks are Schemathesis' defaults except `positive_data_acceptance`: a schema-valid request
may still break a domain rule the schema cannot express (an unknown package id, an
unreachable webhook URL, a stale If-Match, bytes that are not an image), and a 4xx with a
problem body is then the right answer, which the other checks hold to the document.

Buying and uploading run for real: the worker and the MercadoPago sandbox are up, so an
accepted buy creates its preference and an accepted upload is processed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

pytestmark = pytest.mark.usefixtures("worker", "mp_sandbox")

# Examples per operation: enough to reach every documented branch of these small views,
# few enough that the three callers and both modes take seconds.
EXAMPLES = {"anonymous": 3, "user": 8, "admin": 5}
UNLIMITED = "1000000/minute"


@pytest.fixture()
def fuzz_app(app_with: Callable[..., Flask]) -> Flask:
    """The app with rate limits out of the way: a 429 here would hide what is being tested."""
    return app_with(
        rate_limit_default=UNLIMITED,
        rate_limit_buy=UNLIMITED,
        rate_limit_spend=UNLIMITED,
        rate_limit_upload=UNLIMITED,
    )


def explicit_responses_only(spec: dict[str, Any]) -> dict[str, Any]:
    """The document without `default` responses, so undocumented statuses are found."""
    spec = copy.deepcopy(spec)
    for operations in spec["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("default", None)
    return spec


def load_schema(app: Flask) -> Any:
    answer = app.test_client().get("/api/openapi.json")
    assert answer.status_code == 200
    config = schemathesis.Config.from_dict(
        {
            # Auth is ours to send (the three callers); unknown query parameters are
            # ignored by design, as HTTP APIs do, so generating them proves nothing.
            "generation": {"allow-extra-parameters": False, "with-security-parameters": False}
        }
    )
    schema = schemathesis.openapi.from_dict(
        explicit_responses_only(answer.get_json()), config=config
    )
    schema.app = app
    return schema


def fuzz_operation(operation: Any, mode: GenerationMode, headers: dict[str, str], n: int) -> None:
    """Run `n` derandomized examples of one operation; raises the first failure found."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            headers=headers, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("who", ["anonymous", "user", "admin"])
def test_every_operation_answers_as_documented(fuzz_app, make_user, who, mode):
    headers = {"anonymous": dict, "user": make_user, "admin": lambda: make_user(admin=True)}[who]()
    schema = load_schema(fuzz_app)
    failures, fuzzed = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz_operation(operation, mode, headers, EXAMPLES[who])
        except hypothesis.errors.Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): positive mode covers it.
            assert mode == GenerationMode.NEGATIVE, operation.label
            continue
        except (Exception, BaseExceptionGroup) as exc:  # collect all, report every operation
            failures.append(f"{operation.label}:\n{exc}")
        fuzzed += 1
    assert not failures, "\n\n".join(failures)
    assert fuzzed >= (40 if mode == GenerationMode.POSITIVE else 25)
