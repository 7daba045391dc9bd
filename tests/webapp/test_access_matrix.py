"""Who may call what: every endpoint, for anonymous, owner, another user, admin: its status.

`TABLE` is the access contract, one entry per (method, route) of the application's route map:
a route without an entry fails the suite (so a new endpoint must declare who may call it), and
an entry without a route fails too. Path parameters are real objects belonging to "owner" (a
paid purchase, a notification, a webhook endpoint and one of its deliveries, an avatar job and
its files), so "other" really asks for somebody else's data; the answers of anonymous callers
and of "other" must not carry any of the owner's ids. Requests carry valid bodies, so the
status is about access, not validation; where a role's status is not a plain success, the
entry says why.

The app under test is the real one with the rate limits raised (they are tested in
test_rate_limits.py and would only add 429s here) and a real worker running every job started.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from market import jobs, ledger
from market.jobs import StepSpec
from market.media.presets import PRESETS
from market.models import Job, Purchase
from tests.support import images
from tests.support.mercadopago import MercadoPagoSandbox, buy, finished_job, wait_status
from tests.support.poll import wait_for
from tests.support.webhook_receiver import Receiver, running
from webapp.edge import SWAGGER_UI_URL

ROLES = ("anonymous", "owner", "other", "admin")
Statuses = tuple[int, int, int, int]

PUBLIC: Statuses = (200, 200, 200, 200)


def signed_in(code: int) -> Statuses:
    """Any signed-in user, on their own data."""
    return (401, code, code, code)


def admin_only(code: int) -> Statuses:
    return (401, 403, 403, code)


def owner_or_admin(code: int) -> Statuses:
    """The owner's object: somebody else gets 404 (its existence is private), an admin may."""
    return (401, code, 404, code)


def owner_only(code: int) -> Statuses:
    """Private even from admins (the inbox)."""
    return (401, code, 404, 404)


@dataclass(frozen=True)
class Entry:
    statuses: Statuses
    json: Any = None  # a body, or a function of the world giving one
    upload: bool = False  # a valid avatar as the multipart `file`
    if_match: bool = False  # send the caller's current ETag (required by the endpoint)
    fresh: str | None = None  # this path parameter is remade for every call (calls destroy it)
    public: bool = False  # the answer may show the owner's data to anyone (no leak check)


PRIVACY_DEFAULTS = {
    "profile_public": True,
    "show_email": False,
    "show_location": True,
    "show_purchase_activity": False,
    "show_avatar": True,
}
V1 = "/api/v1"
ADV = "/api/v1/advanced"
ENDPOINT = f"{V1}/webhook-endpoints/<uuid:endpoint_id>"
DELIVERY = f"{ENDPOINT}/deliveries/<uuid:delivery_id>"

TABLE: dict[tuple[str, str], Entry] = {
    # Documentation and public reads.
    ("GET", "/api/docs"): Entry(PUBLIC, public=True),
    ("GET", "/api/openapi.json"): Entry(PUBLIC, public=True),
    # Swagger UI's own files (the pinned swagger-ui-bundle) that /api/docs loads.
    ("GET", f"{SWAGGER_UI_URL}<name>"): Entry(PUBLIC, public=True),
    # Anonymous: up/down from a shared cached report; admins: a fresh, detailed check.
    ("GET", f"{ADV}/health"): Entry(PUBLIC),
    # Probes for orchestrators: open, unlimited, cheap (live touches nothing).
    ("GET", f"{ADV}/health/live"): Entry(PUBLIC),
    ("GET", f"{ADV}/health/ready"): Entry(PUBLIC),
    ("GET", f"{ADV}/credits/packages"): Entry(PUBLIC),
    ("GET", f"{V1}/profile/avatar/options"): Entry(PUBLIC),
    # The owner's profile is public (default privacy), so anyone sees it, filtered.
    ("GET", f"{V1}/users/<uuid:user_id>/profile"): Entry(PUBLIC, public=True),
    # The page the checkout returns to: keyed by the purchase's unguessable reference, it
    # shows its state to whoever holds that, and no id of the owner's (checked like others).
    ("GET", "/checkout/purchases/<reference>"): Entry(PUBLIC),
    # Rendered avatars are public files under unguessable, immutable names.
    ("GET", "/media/<path:key>"): Entry(PUBLIC, public=True),
    # The caller's own data: the same for every signed-in user.
    ("GET", f"{ADV}/credits/me"): Entry(signed_in(200)),
    ("GET", f"{ADV}/credits/transactions"): Entry(signed_in(200)),
    ("POST", f"{ADV}/credits/buy"): Entry(signed_in(202), json={"package_id": "credits-100"}),
    # Every role was given credits, so each spends from its own wallet.
    ("POST", f"{ADV}/credits/spend"): Entry(signed_in(201), json={"amount": 1}),
    ("POST", f"{ADV}/profile/avatar/upload"): Entry(signed_in(202), upload=True),
    ("GET", f"{ADV}/tasks"): Entry(signed_in(200)),
    ("GET", f"{V1}/notifications"): Entry(signed_in(200)),
    ("POST", f"{V1}/notifications/read-all"): Entry(signed_in(200)),
    ("GET", f"{V1}/profile/me"): Entry(signed_in(200)),
    ("PATCH", f"{V1}/profile/me"): Entry(
        signed_in(200), json={"display_name": "Matrix"}, if_match=True
    ),
    ("PUT", f"{V1}/profile/me/avatar"): Entry(signed_in(200), json={"preset": next(iter(PRESETS))}),
    ("GET", f"{V1}/profile/me/privacy"): Entry(signed_in(200)),
    ("PUT", f"{V1}/profile/me/privacy"): Entry(signed_in(200), json=PRIVACY_DEFAULTS),
    ("GET", f"{V1}/profile/me/purchases"): Entry(signed_in(200)),
    ("GET", f"{V1}/webhook-endpoints"): Entry(signed_in(200)),
    ("POST", f"{V1}/webhook-endpoints"): Entry(
        signed_in(201), json=lambda w: {"url": w.receiver.url(), "events": ["refund.issued"]}
    ),
    # The owner's objects.
    ("GET", f"{ADV}/analytics/user/<uuid:user_id>"): Entry(owner_or_admin(200)),
    ("GET", f"{ADV}/tasks/<uuid:task_id>"): Entry(owner_or_admin(200)),
    ("GET", f"{ADV}/credits/purchases/<uuid:purchase_id>"): Entry(owner_or_admin(200)),
    # A queued job, made for each call: cancelling it is the owner's or an admin's to do.
    ("DELETE", f"{ADV}/tasks/<uuid:task_id>"): Entry(owner_or_admin(200), fresh="task_id"),
    ("GET", f"{V1}/notifications/<uuid:notification_id>"): Entry(owner_only(200)),
    ("POST", f"{V1}/notifications/<uuid:notification_id>/read"): Entry(owner_only(200)),
    ("GET", ENDPOINT): Entry(owner_or_admin(200)),
    ("PATCH", ENDPOINT): Entry(owner_or_admin(200), json={"description": "checked"}),
    ("DELETE", ENDPOINT): Entry(owner_or_admin(204), fresh="endpoint_id"),
    ("GET", f"{ENDPOINT}/deliveries"): Entry(owner_or_admin(200)),
    ("GET", DELIVERY): Entry(owner_or_admin(200)),
    ("POST", f"{DELIVERY}/redeliver"): Entry(owner_or_admin(202)),
    # Operators only.
    ("POST", f"{ADV}/credits/purchases/<uuid:purchase_id>/refund"): Entry(admin_only(202)),
    ("DELETE", f"{ADV}/cache/public-profiles"): Entry(admin_only(204)),
    ("DELETE", f"{ADV}/cache/user/<uuid:user_id>"): Entry(admin_only(204)),
    ("GET", f"{ADV}/metrics/endpoints"): Entry(admin_only(200)),
    ("GET", f"{ADV}/metrics/requests"): Entry(admin_only(200)),
    ("GET", f"{ADV}/metrics/system"): Entry(admin_only(200)),
    ("GET", f"{ADV}/metrics/users"): Entry(admin_only(200)),
    ("GET", f"{ADV}/metrics/users/<uuid:user_id>"): Entry(admin_only(200)),
    # The in-app alert rules and their run-time thresholds (validation: test_alerts.py).
    ("GET", f"{ADV}/alerts"): Entry(admin_only(200)),
    ("PATCH", f"{ADV}/alerts/<string:rule>"): Entry(
        admin_only(200),
        json={"threshold": None},  # back to the default: no lasting effect
    ),
    # Prometheus: an admin, or the METRICS_TOKEN bearer (unset by default: no anonymous scrape,
    # whatever the caller's address; the token is tested in test_metrics.py).
    ("GET", "/metrics"): Entry(admin_only(200)),
    # MercadoPago's x-signature is this endpoint's only credential: a bearer token, even an
    # admin's, grants nothing, and an unsigned notification is refused before anything is stored.
    ("POST", f"{ADV}/webhooks/mercadopago"): Entry(
        (401, 401, 401, 401),
        json={"type": "payment", "action": "payment.updated", "data": {"id": "123456"}},
    ),
}

_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


def routes(app: Flask) -> set[tuple[str, str]]:
    """(method, rule) of every route the app answers (HEAD and OPTIONS are implied)."""
    return {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_route_has_an_entry(app: Flask) -> None:
    missing = sorted(routes(app) - set(TABLE))
    assert not missing, f"routes without an access entry in TABLE: {missing}"


def test_every_entry_is_a_route(app: Flask) -> None:
    stale = sorted(set(TABLE) - routes(app))
    assert not stale, f"TABLE entries that are no route of the app: {stale}"


# The world: three users and the owner's objects ------------------------------------------------


@dataclass
class World:
    app: Flask
    client: FlaskClient
    receiver: Receiver
    headers: dict[str, dict[str, str]]
    user_ids: dict[str, uuid.UUID]
    params: dict[str, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    anonymous_address: str = ""

    def call(self, role: str, method: str, path: str, **kwargs: Any) -> TestResponse:
        environ = {"REMOTE_ADDR": self.anonymous_address} if role == "anonymous" else {}
        headers = {**self.headers[role], **kwargs.pop("headers", {})}
        return self.client.open(
            path, method=method, headers=headers, environ_base=environ, **kwargs
        )

    def fresh(self, name: str) -> str:
        """A new object of the owner's for a call that destroys it."""
        if name == "endpoint_id":
            return register_endpoint(self, ["refund.issued"])
        assert name == "task_id", name
        with self.app.extensions["spartan.sessions"]() as session:
            job = jobs.create_job(
                session,
                kind="test.access_matrix",
                owner_id=self.user_ids["owner"],
                # Never sent: the job stays queued until cancelled.
                steps=[StepSpec("maintenance.test_record", {"key": "unused", "value": "x"})],
            )
            session.commit()
            return str(job.id)

    def avatar_key(self) -> str:
        """A file of the owner's current avatar (an upload, or a preset chosen since)."""
        profile = self.call("owner", "GET", f"{V1}/profile/me").get_json()
        url = next(iter(profile["avatar_urls"].values()))
        return url.split("/media/", 1)[1]

    def settle(self) -> None:
        """Wait until no job of these users is queued or running (tests stay independent)."""

        def idle() -> bool:
            with self.app.extensions["spartan.sessions"]() as session:
                return (
                    session.execute(
                        select(Job.id).where(
                            Job.owner_id.in_(self.user_ids.values()),
                            Job.state.in_(jobs.ACTIVE_STATES),
                            Job.kind != "test.access_matrix",
                        )
                    ).first()
                    is None
                )

        wait_for(idle, timeout=30, what="the matrix users' jobs to finish")


def register_endpoint(world: World, events: list[str]) -> str:
    answer = world.call(
        "owner",
        "POST",
        f"{V1}/webhook-endpoints",
        json={"url": world.receiver.url(), "events": events},
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()["id"]


def give_credits(app: Flask, user_id: uuid.UUID, credits: int) -> None:
    with app.extensions["spartan.sessions"]() as session:
        ledger.credit_sale(
            session, user_id=user_id, credits=credits, reference=f"test:matrix:{uuid.uuid4()}"
        )
        session.commit()


def build_owner_objects(world: World, mp_sandbox: MercadoPagoSandbox) -> None:
    """A paid purchase (its notification, delivered to the owner's endpoint) and an avatar."""
    owner = world.headers["owner"]
    endpoint_id = register_endpoint(world, ["credits.purchase_approved"])
    checkout = buy(world.client, owner)
    mp_sandbox.pay(checkout["preference_id"])
    wait_status(world.app, checkout["purchase_id"], "approved")

    def approved() -> str | None:
        inbox = world.call("owner", "GET", f"{V1}/notifications").get_json()
        return next((n["id"] for n in inbox if n["kind"] == "credits.purchase_approved"), None)

    notification_id = wait_for(approved, what="the purchase notification")

    def delivered() -> str | None:
        url = f"{V1}/webhook-endpoints/{endpoint_id}/deliveries"
        rows = world.call("owner", "GET", url).get_json()
        return next((d["id"] for d in rows if d["state"] == "succeeded"), None)

    delivery_id = wait_for(delivered, what="the delivery of that notification")
    upload = world.call(
        "owner",
        "POST",
        f"{ADV}/profile/avatar/upload",
        **images.multipart(images.png_with_transparency(), "a.png", "image/png"),
    )
    assert upload.status_code == 202, upload.get_data(as_text=True)
    job = finished_job(world.client, owner, upload.get_json()["status_url"])
    assert job["state"] == "succeeded", job
    with world.app.extensions["spartan.sessions"]() as session:
        reference = session.get(Purchase, uuid.UUID(checkout["purchase_id"])).external_reference
    world.params.update(
        reference=reference,
        purchase_id=checkout["purchase_id"],
        notification_id=notification_id,
        endpoint_id=endpoint_id,
        delivery_id=delivery_id,
        task_id=upload.get_json()["task_id"],
    )
    world.secrets |= set(world.params.values()) | {upload.get_json()["media_id"]}


@pytest.fixture(scope="module")
def world(
    app: Flask,
    token: Callable[..., str],
    worker: Any,
    mp_sandbox: MercadoPagoSandbox,
) -> Iterator[World]:
    from webapp import create_app

    settings = replace(
        app.extensions["spartan.settings"],
        rate_limit_default="100000/minute",
        rate_limit_buy="100000/minute",
        rate_limit_spend="100000/minute",
        rate_limit_upload="100000/minute",
        mercadopago_api_base_url=mp_sandbox.url,
    )
    matrix_app = create_app(settings)
    matrix_app.config["TESTING"] = True
    uids = {role: f"matrix-{role}-{uuid.uuid4().hex[:8]}" for role in ROLES[1:]}
    headers = {
        role: {"Authorization": f"Bearer {token(uid, admin=role == 'admin')}"}
        for role, uid in uids.items()
    }
    n = uuid.uuid4().int
    with running() as receiver:
        client = matrix_app.test_client()
        user_ids = {
            role: uuid.UUID(client.get(f"{V1}/profile/me", headers=h).get_json()["user_id"])
            for role, h in headers.items()
        }
        world = World(
            app=matrix_app,
            client=client,
            receiver=receiver,
            headers={"anonymous": {}, **headers},
            user_ids=user_ids,
            anonymous_address=f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}",
        )
        for user_id in user_ids.values():
            give_credits(matrix_app, user_id, 10)
        build_owner_objects(world, mp_sandbox)
        world.params["user_id"] = str(user_ids["owner"])
        world.params["rule"] = "error_rate"
        world.secrets |= {str(user_ids["owner"]), uids["owner"]}
        world.settle()
        try:
            yield world
        finally:
            world.settle()
            remove_leftovers(world)
            matrix_app.extensions["spartan.engine"].dispose()


def remove_leftovers(world: World) -> None:
    """Delete the users' webhook endpoints (an admin's sees every user's events) and cancel
    the never-sent probe jobs, so later tests meet neither."""
    for endpoint in world.call("admin", "GET", f"{V1}/webhook-endpoints").get_json():
        if uuid.UUID(endpoint["owner_id"]) in world.user_ids.values():
            world.call("admin", "DELETE", f"{V1}/webhook-endpoints/{endpoint['id']}")
    with world.app.extensions["spartan.sessions"]() as session:
        probes = session.execute(
            select(Job).where(Job.kind == "test.access_matrix", Job.state == "queued")
        ).scalars()
        for job in list(probes):
            jobs.cancel_job(session, job)
        session.commit()


# The matrix -------------------------------------------------------------------------------------


def request_for(world: World, rule: str, entry: Entry, role: str) -> tuple[str, dict[str, Any]]:
    """The path (the owner's objects filled in) and the client arguments of one call."""
    params = dict(world.params)
    if entry.fresh:
        params[entry.fresh] = world.fresh(entry.fresh)
    if "<path:key>" in rule:
        params["key"] = world.avatar_key()
    if "<name>" in rule:
        params["name"] = "swagger-ui-bundle.js"
    path = _PARAM.sub(lambda m: params[m.group(1)], rule)
    kwargs: dict[str, Any] = {}
    if entry.json is not None:
        kwargs["json"] = entry.json(world) if callable(entry.json) else entry.json
    if entry.upload:
        kwargs.update(images.multipart(images.png_with_transparency(), "a.png", "image/png"))
    if entry.if_match and role != "anonymous":
        etag = world.call(role, "GET", path).headers["ETag"]
        kwargs["headers"] = {"If-Match": etag}
    return path, kwargs


def leaked(world: World, path: str, answer: TestResponse) -> list[str]:
    """The owner's ids in the answer (those in the request's own path excepted)."""
    if not answer.is_json:
        return []
    text = answer.get_data(as_text=True)
    return sorted(s for s in world.secrets if s not in path and s in text)


@pytest.mark.parametrize(("method", "rule"), list(TABLE), ids=[f"{m} {r}" for m, r in TABLE])
def test_access(world: World, method: str, rule: str) -> None:
    entry = TABLE[(method, rule)]
    expected = dict(zip(ROLES, entry.statuses, strict=True))
    got: dict[str, int] = {}
    notes: list[str] = []
    for role in ROLES:
        path, kwargs = request_for(world, rule, entry, role)
        with world.call(role, method, path, **kwargs) as answer:
            got[role] = answer.status_code
            if 400 <= answer.status_code < 500 and answer.mimetype != "application/problem+json":
                notes.append(f"{role}: {answer.status_code} is {answer.mimetype}, not problem+json")
            shown = (
                [] if entry.public or role in ("owner", "admin") else leaked(world, path, answer)
            )
            if shown:
                notes.append(f"{role} was shown the owner's {shown}")
            if got[role] != expected[role]:
                notes.append(f"{role}: {answer.get_data(as_text=True)[:300]}")
    world.settle()
    assert got == expected and not notes, (got, notes)


def test_a_delivery_is_not_reachable_through_another_users_endpoint(world: World) -> None:
    """Ownership is checked on the pair: "other" naming the owner's delivery under an endpoint
    of their own still gets 404."""
    answer = world.call(
        "other",
        "POST",
        f"{V1}/webhook-endpoints",
        json={"url": world.receiver.url(), "events": ["credits.purchase_approved"]},
    )
    assert answer.status_code == 201
    theirs = answer.get_json()["id"]
    base = f"{V1}/webhook-endpoints/{theirs}/deliveries/{world.params['delivery_id']}"
    for method, path in (("GET", base), ("POST", f"{base}/redeliver")):
        with world.call("other", method, path) as refused:
            assert refused.status_code == 404, (method, refused.get_json())
    assert (
        world.call("other", "GET", f"{V1}/webhook-endpoints/{theirs}/deliveries").get_json() == []
    )
