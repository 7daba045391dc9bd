"""Profile API: ETag / If-Match, per-field validation, privacy, public views, presets, options."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from market.models import Notification

ME = "/api/v1/profile/me"
PRIVACY = "/api/v1/profile/me/privacy"
AVATAR = "/api/v1/profile/me/avatar"
OPTIONS = "/api/v1/profile/avatar/options"
ALL_PRIVATE = {
    "profile_public": True,
    "show_email": False,
    "show_location": False,
    "show_purchase_activity": False,
    "show_avatar": False,
}
ALL_SHOWN = {k: True for k in ALL_PRIVATE}


def public(user_id: Any) -> str:
    return f"/api/v1/users/{user_id}/profile"


def patch(client, headers, body, etag=None):
    if etag is None:
        etag = client.get(ME, headers=headers).headers["ETag"]
    return client.patch(ME, json=body, headers={**headers, "If-Match": etag})


def test_get_profile_has_an_etag_and_answers_304_when_unchanged(client, alice):
    first = client.get(ME, headers=alice)
    assert first.status_code == 200
    body = first.get_json()
    assert set(body) >= {"display_name", "bio", "location", "website", "avatar_urls", "version"}
    assert body["avatar_urls"] == {}
    etag = first.headers["ETag"]
    again = client.get(ME, headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304


def test_patch_changes_fields_and_the_etag(client, alice, db, user_id_of):
    response = patch(
        client,
        alice,
        {
            "display_name": "  Alice  ",
            "bio": "Line one\r\nline two",
            "website": "https://a.example",
        },
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["display_name"], body["bio"], body["website"]) == (
        "Alice",
        "Line one\nline two",
        "https://a.example",
    )
    # The answer's ETag is the one a fresh GET gives (so it can be sent straight back).
    assert client.get(ME, headers=alice).headers["ETag"] == response.headers["ETag"]
    assert client.get(ME, headers=alice).get_json()["display_name"] == "Alice"
    kinds = db.execute(
        select(Notification.kind).where(Notification.user_id == user_id_of(alice))
    ).scalars()
    assert list(kinds) == ["profile.updated"]


def test_stale_if_match_is_412_and_changes_nothing(client, alice):
    etag = client.get(ME, headers=alice).headers["ETag"]
    assert patch(client, alice, {"location": "Lima"}, etag).status_code == 200
    # A second device still holding the first ETag.
    stale = patch(client, alice, {"location": "Quito"}, etag)
    assert stale.status_code == 412
    assert stale.mimetype == "application/problem+json"
    assert client.get(ME, headers=alice).get_json()["location"] == "Lima"


def test_without_if_match_the_write_goes_through(client, alice):
    """Clients of the earlier API send no If-Match: their writes are unconditional."""
    response = client.patch(ME, json={"bio": "x"}, headers=alice)
    assert response.status_code == 200, response.get_json()
    assert response.headers["ETag"] == client.get(ME, headers=alice).headers["ETag"]
    assert client.get(ME, headers=alice).get_json()["bio"] == "x"


@pytest.mark.parametrize("tag", ['W/""', '"nope"', "0", ""])
def test_an_if_match_naming_no_current_version_is_412(client, alice, tag):
    """A weak, stale or malformed tag names no current version (strong comparison)."""
    response = client.patch(ME, json={"bio": "y"}, headers={**alice, "If-Match": tag})
    assert response.status_code == 412, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert client.get(ME, headers=alice).get_json()["bio"] is None


def test_if_match_star_matches_the_current_version(client, alice):
    response = client.patch(ME, json={"bio": "any"}, headers={**alice, "If-Match": "*"})
    assert response.status_code == 200, response.get_json()


def test_privacy_takes_an_optional_if_match(client, alice):
    read = client.get(PRIVACY, headers=alice)
    etag = read.headers["ETag"]
    assert client.get(PRIVACY, headers={**alice, "If-None-Match": etag}).status_code == 304
    first = client.put(PRIVACY, json=ALL_SHOWN, headers={**alice, "If-Match": etag})
    assert first.status_code == 200, first.get_json()
    assert first.headers["ETag"] != etag
    # Another device still holding the first ETag: 412, nothing changes.
    stale = client.put(PRIVACY, json=ALL_PRIVATE, headers={**alice, "If-Match": etag})
    assert stale.status_code == 412
    assert stale.mimetype == "application/problem+json"
    assert client.get(PRIVACY, headers=alice).get_json()["show_email"] is True
    # Without If-Match the write is unconditional.
    plain = client.put(PRIVACY, json=ALL_PRIVATE, headers=alice)
    assert plain.status_code == 200
    assert client.get(PRIVACY, headers=alice).get_json()["show_email"] is False


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_privacy_flags_are_json_booleans(client, alice, value):
    body = {**ALL_PRIVATE, "show_email": value}
    response = client.put(PRIVACY, json=body, headers=alice)
    assert response.status_code == 422, response.get_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("display_name", "two\nlines"),
        ("location", "tab\x0bbed"),
        ("website", "ftp://example.com"),
        ("website", "http://Example.com"),
        ("website", "http://example"),
    ],
)
def test_values_outside_the_documented_patterns_are_refused(client, alice, field, value):
    response = client.patch(ME, json={field: value}, headers=alice)
    assert response.status_code == 422, response.get_json()


def test_lone_carriage_returns_in_the_bio_become_line_feeds(client, alice):
    response = client.patch(ME, json={"bio": "one\rtwo\r\nthree"}, headers=alice)
    assert response.get_json()["bio"] == "one\ntwo\nthree"


def test_same_values_make_no_new_version(client, alice):
    first = patch(client, alice, {"bio": "same"})
    second = patch(client, alice, {"bio": "same"})
    assert second.status_code == 200
    assert second.get_json()["version"] == first.get_json()["version"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"display_name": "x" * 81}, "display_name"),
        ({"display_name": "two\nlines"}, "display_name"),
        ({"bio": "y" * 1001}, "bio"),
        ({"location": "bell\x07"}, "location"),
        ({"website": "javascript:alert(1)"}, "website"),
        ({"website": "not a url"}, "website"),
        ({"website": 12}, "website"),
        ({"nickname": "extra"}, "nickname"),
    ],
)
def test_invalid_fields_are_422_per_field(client, alice, body, field):
    response = patch(client, alice, body)
    assert response.status_code == 422
    problem = response.get_json()
    assert list(problem["errors"]["json"]) == [field], problem


def test_several_invalid_fields_are_all_reported(client, alice):
    response = patch(client, alice, {"display_name": "x" * 81, "website": "ftp://x.example"})
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["json"]) == {"display_name", "website"}


def test_blank_clears_a_field(client, alice):
    patch(client, alice, {"location": "Lima"})
    assert patch(client, alice, {"location": "   "}).get_json()["location"] is None


def test_privacy_get_and_put(client, alice, db, user_id_of):
    assert client.get(PRIVACY, headers=alice).get_json()["profile_public"] is True
    response = client.put(PRIVACY, json=ALL_PRIVATE, headers=alice)
    assert response.status_code == 200
    assert {k: response.get_json()[k] for k in ALL_PRIVATE} == ALL_PRIVATE
    # Unchanged settings record no second notification.
    client.put(PRIVACY, json=ALL_PRIVATE, headers=alice)
    kinds = list(
        db.execute(
            select(Notification.kind).where(Notification.user_id == user_id_of(alice))
        ).scalars()
    )
    assert kinds == ["privacy.updated"]


def test_privacy_put_needs_every_setting(client, alice):
    response = client.put(PRIVACY, json={"profile_public": False}, headers=alice)
    assert response.status_code == 422
    assert "show_email" in response.get_json()["errors"]["json"]


def _setup_public_user(client, headers) -> None:
    patch(client, headers, {"display_name": "Bob", "location": "Lima", "bio": "hi"})
    client.put(AVATAR, json={"preset": "ocean"}, headers=headers)


def test_public_profile_follows_privacy(client, alice, bob, user_id_of):
    _setup_public_user(client, bob)
    bob_id = user_id_of(bob)
    client.put(PRIVACY, json=ALL_SHOWN, headers=bob)
    shown = client.get(public(bob_id), headers=alice).get_json()
    assert shown["location"] == "Lima"
    assert "email" in shown
    assert set(shown["avatar_urls"]) == {"64", "128", "256", "512"}
    assert shown["purchase_activity"] == {"purchases": 0, "last_purchase_on": None}

    client.put(PRIVACY, json=ALL_PRIVATE, headers=bob)  # public, but hiding every detail
    for viewer in (alice, {}):
        hidden = client.get(public(bob_id), headers=viewer).get_json()
        assert hidden["display_name"] == "Bob"
        assert not {"location", "email", "avatar_urls", "purchase_activity"} & set(hidden)


def test_private_profile_is_404_except_for_owner_and_admin(client, alice, bob, admin, user_id_of):
    _setup_public_user(client, bob)
    bob_id = user_id_of(bob)
    assert client.get(public(bob_id)).status_code == 200  # cached while public…
    client.put(PRIVACY, json={**ALL_PRIVATE, "profile_public": False}, headers=bob)
    # …and the privacy change drops that entry at once.
    assert client.get(public(bob_id)).status_code == 404
    assert client.get(public(bob_id), headers=alice).status_code == 404
    for viewer in (bob, admin):
        full = client.get(public(bob_id), headers=viewer)
        assert full.status_code == 200
        body = full.get_json()
        assert body["location"] == "Lima"
        assert body["privacy"]["profile_public"] is False
        assert set(body["avatar_urls"]) == {"64", "128", "256", "512"}


def test_unknown_user_is_404(client, alice):
    assert (
        client.get(public("00000000-0000-4000-8000-000000000000"), headers=alice).status_code == 404
    )


def test_public_profile_cache_is_dropped_by_a_patch(client, alice, bob, user_id_of):
    bob_id = user_id_of(bob)
    assert client.get(public(bob_id), headers=alice).get_json()["display_name"] is None
    patch(client, bob, {"display_name": "Robert"})
    assert client.get(public(bob_id), headers=alice).get_json()["display_name"] == "Robert"


def test_avatar_options_and_presets(client, alice):
    options = client.get(OPTIONS).get_json()
    assert options["sizes"] == [64, 128, 256, 512]
    assert set(options["formats"]) == {"jpeg", "png", "webp"}
    assert options["max_bytes"] > 0 and options["max_pixels"] > 0
    assert len(options["presets"]) >= 4
    preset = options["presets"][0]
    with client.get(preset["avatar_urls"]["128"]) as image:
        assert image.status_code == 200
        assert image.mimetype == "image/webp"
        assert image.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert image.data[:4] == b"RIFF"

    before = client.get(ME, headers=alice).headers["ETag"]
    chosen = client.put(AVATAR, json={"preset": preset["id"]}, headers=alice)
    assert chosen.status_code == 200
    body = chosen.get_json()
    assert body["avatar"]["source"] == "preset"
    assert body["avatar_urls"] == preset["avatar_urls"]
    assert set(body["avatar"]["urls"]["jpeg"]) == {"64", "128", "256", "512"}
    # The avatar is part of the profile: its ETag changed.
    assert client.get(ME, headers=alice).headers["ETag"] != before


def test_unknown_preset_is_422(client, alice):
    response = client.put(AVATAR, json={"preset": "nope"}, headers=alice)
    assert response.status_code == 422
    assert "preset" in response.get_json()["errors"]["json"]


@pytest.mark.parametrize("key", ["staging/x.jpg", "../secrets", "avatars/../../etc/passwd"])
def test_media_route_serves_only_rendered_files(client, key):
    assert client.get(f"/media/{key}").status_code == 404


def test_profile_endpoints_need_a_user(client):
    assert client.get(ME).status_code == 401
    assert client.get(PRIVACY).status_code == 401
