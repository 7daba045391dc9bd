"""Schemathesis' own CLI with every check (what `--checks all` turns on) against the app
under gunicorn, with a real Celery worker and the MercadoPago sandbox: as an anonymous caller,
a user and an admin, through all four phases (examples, coverage, fuzzing, stateful).
Stateful testing follows the document's links: create a webhook endpoint, then read, patch
and delete it; buy, then follow (and cancel) the task; any id an answer carries leads to the
operations it names.

The build fails on any failure, a 5xx included. What a check may not hold against, and why, is
`EXCEPTIONS` below: each names the operations and statuses, with the reason no schema can
state it. Nothing else is excluded.

Data, examples and their order are fixed (`--seed`), so a failure reproduces; the output of a
failing run has the curl commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.stack import Deployment

pytestmark = pytest.mark.usefixtures("mp_sandbox")

SEED = 20261129
EXAMPLES = 5  # per operation and phase: the three callers take about two minutes together
STATEFUL_STEPS = 12
# Positive data a valid schema cannot keep from being refused (RFC 9110 and domain rules).
_POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
EXCEPTIONS: list[dict[str, Any]] = [
    {
        "why": "If-Match is a version the server holds: any tag a generator draws is stale "
        "(412), which is the contract (absent If-Match goes through).",
        "include-name": ["PATCH /api/v1/profile/me", "PUT /api/v1/profile/me/privacy"],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE, "412"]}},
    },
    {
        "why": "An Idempotency-Key already used with another body is refused (422) by design; "
        "the generator draws keys from a small space and reuses them with other bodies. "
        "A refund's purchase must exist and be refundable, spending needs credits (409).",
        "include-name": [
            "POST /api/v1/advanced/credits/buy",
            "POST /api/v1/advanced/credits/spend",
            "POST /api/v1/advanced/credits/purchases/{purchase_id}/refund",
        ],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE, "422"]}},
    },
    {
        "why": "A webhook URL must resolve to an address the SSRF guard allows (422 otherwise): "
        "resolving a host is no pattern, and offline nothing resolves.",
        "include-name": [
            "POST /api/v1/webhook-endpoints",
            "PATCH /api/v1/webhook-endpoints/{endpoint_id}",
        ],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE, "422"]}},
    },
    {
        "why": "The bytes must decode as a JPEG, PNG or WebP within the pixel limits (415, "
        "422): the document states the types and minimum size, no generator draws images.",
        "include-name": ["POST /api/v1/advanced/profile/avatar/upload"],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE, "415", "422"]}},
    },
    {
        "why": "`from` and `to` must be in order and at most 366 days apart (422): a rule "
        "between two parameters, which JSON Schema cannot state.",
        "include-name": ["GET /api/v1/advanced/analytics/user/{user_id}"],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE, "422"]}},
    },
    {
        "why": "A `cursor` is opaque: only one the API gave out (in a page's Link header) "
        "continues a list, as only the current ETag satisfies If-Match; any other is 400.",
        "include-name": [
            "GET /api/v1/advanced/credits/transactions",
            "GET /api/v1/profile/me/purchases",
        ],
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_POSITIVE, "400"]}},
    },
]
# The one check turned off, for one operation: DELETE /tasks/{id} cancels a job, and the job
# stays readable with `state: cancelled` (DESIGN.md; the document says so). Reading it after
# the cancel is the contract, not a use after free. Every other operation keeps the check
# (a deleted webhook endpoint is gone: 404).
CHECK_OFF = {"use_after_free": ["GET /api/v1/advanced/tasks/{task_id}"]}
CALLERS = ("anonymous", "user", "admin")
UNLIMITED = "1000000/minute"


def every_check() -> list[str]:
    """The names `--checks all` turns on, from schemathesis itself (new checks included)."""
    import schemathesis.specs.openapi.checks  # noqa: F401  (registers the OpenAPI checks)
    from schemathesis.checks import CHECKS

    return sorted(CHECKS.get_all_names())


def config_toml() -> str:
    """The run's config file (TOML): every check on, the stateful phase, `CHECK_OFF`
    and `EXCEPTIONS`. Checks are turned on here, not with `--checks all` on the command line:
    schemathesis lets a check named there win over a per-operation `enabled = false`."""
    lines = [f"checks.{name}.enabled = true" for name in every_check()]
    lines += ["[phases.stateful]", f"max-steps = {STATEFUL_STEPS}"]
    for check, names in CHECK_OFF.items():
        lines += ["", "[[operations]]", f"include-name = {json.dumps(names)}"]
        lines.append(f"checks.{check}.enabled = false")
    for entry in EXCEPTIONS:
        lines += ["", f"# {entry['why']}", "[[operations]]"]
        lines.append(f"include-name = {json.dumps(entry['include-name'])}")
        for check, settings in entry["checks"].items():
            statuses = json.dumps(settings["expected-statuses"])
            lines.append(f"checks.{check}.expected-statuses = {statuses}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def live(mp_sandbox: Any) -> Iterator[Deployment]:
    """The app under gunicorn and one worker, rate limits out of the way (a 429 would hide
    what is tested; limits have their own tests)."""
    deployment = Deployment(
        "st", RATE_LIMIT_SPEND=UNLIMITED, RATE_LIMIT_UPLOAD=UNLIMITED, LOG_LEVEL="ERROR"
    )
    try:
        deployment.start("st")
        yield deployment
    finally:
        deployment.close()


def run_schemathesis(url: str, config: Path, headers: dict[str, str]) -> tuple[int, str]:
    """The CLI's exit code and output. It runs in the config's folder, where it keeps its
    cache (`.schemathesis/`), out of the source tree."""
    argv = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{url}/api/openapi.json",
        *("--seed", str(SEED), "--max-examples", str(EXAMPLES)),
        *("--phases", "examples,coverage,fuzzing,stateful", "--no-color"),
        *(arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=config.parent,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("who", CALLERS)
def test_schemathesis_finds_nothing(
    live: Deployment, tmp_path: Path, token: Callable[..., str], who: str
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml())
    headers = {}
    if who != "anonymous":
        uid = f"st-{who}-{time.monotonic_ns()}"
        headers["Authorization"] = f"Bearer {token(uid, admin=who == 'admin')}"
    code, output = run_schemathesis(live.web_url, config, headers)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    print(f"schemathesis as {who}: {summary}")
    assert code == 0, output[-20000:]


def test_a_deleted_webhook_endpoint_is_gone(live: Deployment, token: Callable[..., str]) -> None:
    """A delete that removes (unlike a task's cancel): everything on it is 404 after."""
    import requests

    auth = {"Authorization": f"Bearer {token(f'st-gone-{time.monotonic_ns()}')}"}
    base = f"{live.web_url}/api/v1/webhook-endpoints"
    created = requests.post(
        base,
        json={"url": "http://127.0.0.1:9/hook", "events": ["refund.issued"]},
        headers=auth,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    url = f"{base}/{created.json()['id']}"
    assert requests.delete(url, headers=auth, timeout=10).status_code == 204
    for method in ("GET", "PATCH", "DELETE"):
        gone = requests.request(method, url, json={"description": "x"}, headers=auth, timeout=10)
        assert gone.status_code == 404, (method, gone.text)
