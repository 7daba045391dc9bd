"""market.identity.profiles: views, privacy filtering and the guarded profile write."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from market.errors import NotFoundError, PreconditionFailedError
from market.identity import profiles
from market.identity.tokens import Identity, upsert_user
from market.media import avatars
from market.models import Notification, PrivacySettings


@pytest.fixture()
def kit(settings):
    return {"storage": avatars.storage_for(settings), "policy": avatars.policy_for(settings)}


@pytest.fixture()
def user_id(db):
    uid = f"u-{uuid.uuid4().hex[:12]}"
    user = upsert_user(db, Identity(uid=uid, email=f"{uid}@example.com", name=None, is_admin=False))
    db.commit()
    return user.id


def _refuse(view):
    raise PreconditionFailedError("stale")


def test_update_profile_checks_the_locked_view_before_writing(db, user_id, kit):
    seen = []
    view = profiles.update_profile(
        db, user_id=user_id, changes={"bio": "hello"}, precondition=seen.append, **kit
    )
    db.commit()
    assert seen[0]["bio"] is None and seen[0]["version"] == 1
    assert (view["bio"], view["version"]) == ("hello", 2)
    with pytest.raises(PreconditionFailedError):
        profiles.update_profile(
            db, user_id=user_id, changes={"bio": "other"}, precondition=_refuse, **kit
        )
    db.rollback()
    assert profiles.own_profile(db, user_id=user_id, **kit)["bio"] == "hello"
    keys = db.execute(
        select(Notification.dedupe_key).where(Notification.user_id == user_id)
    ).scalars()
    assert list(keys) == [f"profile:{user_id}:v2"]


def test_views_are_plain_json_and_stable(db, user_id, kit):
    import json

    view = profiles.own_profile(db, user_id=user_id, **kit)
    assert json.loads(json.dumps(view)) == view
    assert view == profiles.own_profile(db, user_id=user_id, **kit)


@pytest.mark.parametrize(
    ("flag", "field"),
    [
        ("show_email", "email"),
        ("show_location", "location"),
        ("show_avatar", "avatar_urls"),
        ("show_purchase_activity", "purchase_activity"),
    ],
)
def test_each_privacy_flag_hides_its_field(db, user_id, kit, flag, field):
    values = {name: True for name in profiles.PRIVACY_FIELDS}
    profiles.update_privacy(db, user_id=user_id, values=values)
    db.commit()
    assert field in profiles.public_profile(db, user_id=user_id, **kit)
    profiles.update_privacy(db, user_id=user_id, values={**values, flag: False})
    db.commit()
    view = profiles.public_profile(db, user_id=user_id, **kit)
    assert field not in view
    assert "display_name" in view


def test_private_profile_has_no_public_view(db, user_id, kit):
    db.get(PrivacySettings, user_id).profile_public = False
    db.commit()
    assert profiles.public_profile(db, user_id=user_id, **kit) is None
    assert profiles.full_profile(db, user_id=user_id, **kit)["privacy"]["profile_public"] is False


def test_unknown_user(db, kit):
    with pytest.raises(NotFoundError):
        profiles.public_profile(db, user_id=uuid.uuid4(), **kit)
