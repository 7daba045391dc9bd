"""The access matrix walked by a revoked admin: a user who was an admin (the stored user row
says so) and now presents a token without `admin: true`. From the first request with that
token they are any other user: every admin route refuses them (403), the owner's objects are
hidden (404), and no answer shows the owner's ids.

Same world and table as test_access_matrix.py; the revoked admin's expected status on every
route is the "other" column there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from market.models import User
from tests.webapp.test_access_matrix import (
    ADV,
    ROLES,
    TABLE,
    World,
    give_credits,
    leaked,
    request_for,
    world,  # noqa: F401  (the module's world: users, the owner's objects)
)

REVOKED = "revoked"


def stored_admin_flag(matrix: World, user_id: uuid.UUID) -> bool:
    with matrix.app.extensions["spartan.sessions"]() as session:
        return session.execute(select(User.is_admin).where(User.id == user_id)).scalar_one()


@pytest.fixture(scope="module")
def revoked(world: World, token: Callable[..., str]) -> Iterator[World]:  # noqa: F811
    """`world` plus the revoked admin: seen once as an admin, then with a plain token."""
    uid = f"matrix-revoked-{uuid.uuid4().hex[:8]}"
    as_admin = {"Authorization": f"Bearer {token(uid, admin=True)}"}
    answer = world.client.get(f"{ADV}/metrics/system", headers=as_admin)
    assert answer.status_code == 200, answer.get_json()
    user_id = uuid.UUID(world.client.get("/api/v1/profile/me", headers=as_admin).json["user_id"])
    assert stored_admin_flag(world, user_id)
    world.headers[REVOKED] = {"Authorization": f"Bearer {token(uid, admin=False)}"}
    world.user_ids[REVOKED] = user_id  # settled and cleaned up with the others
    give_credits(world.app, user_id, 10)
    yield world
    world.headers.pop(REVOKED)


@pytest.mark.parametrize(("method", "rule"), list(TABLE), ids=[f"{m} {r}" for m, r in TABLE])
def test_a_revoked_admin_is_any_other_user(revoked: World, method: str, rule: str) -> None:
    entry = TABLE[(method, rule)]
    expected = entry.statuses[ROLES.index("other")]
    path, kwargs = request_for(revoked, rule, entry, REVOKED)
    with revoked.call(REVOKED, method, path, **kwargs) as answer:
        body = answer.get_data()[:300]
        assert answer.status_code == expected, (answer.status_code, body)
        assert entry.public or not leaked(revoked, path, answer), body
    revoked.settle()


def test_the_stored_admin_flag_follows_the_token_at_once(revoked: World) -> None:
    """The first admin route asked with the plain token clears the stored flag."""
    assert revoked.call(REVOKED, "GET", f"{ADV}/metrics/system").status_code == 403
    assert not stored_admin_flag(revoked, revoked.user_ids[REVOKED])
