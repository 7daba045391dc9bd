"""`/media`: local-disk files are served in every environment unless MEDIA_URL is a CDN's."""

from __future__ import annotations

import socket
import uuid

import pytest
from sqlalchemy import func, select

from market.media.storage import storage_for
from market.models import Job, MediaFile
from tests.support import images
from tests.support.s3 import s3_changes

WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 "


@pytest.fixture()
def stored(settings) -> str:
    key = f"avatars/{uuid.uuid4()}/{uuid.uuid4().hex}/64.webp"
    storage_for(settings).put(key, WEBP, content_type="image/webp")
    return key


@pytest.mark.parametrize("app_env", ["production", "development", "test"])
def test_local_media_is_served_in_every_environment(app_with, stored, app_env):
    client = app_with(app_env=app_env).test_client()
    with client.get(f"/media/{stored}") as answer:
        assert answer.status_code == 200
        assert answer.data == WEBP
        assert answer.mimetype == "image/webp"
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_media_url_on_a_cdn_turns_the_route_off(app_with, stored):
    client = app_with(app_env="production", media_url="https://cdn.spartan.test/m").test_client()
    assert client.get(f"/media/{stored}").status_code == 404


def test_staged_originals_are_never_served(app_with, settings):
    key = f"staging/{uuid.uuid4().hex}.jpg"
    storage_for(settings).put(key, b"\xff\xd8 with GPS", content_type="image/jpeg")
    client = app_with(app_env="production").test_client()
    assert client.get(f"/media/{key}").status_code == 404


def test_upload_while_the_bucket_is_unreachable_is_503_and_leaves_nothing(
    app_with, s3_server, alice, db
):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = app_with(**s3_changes(s3_server, s3_endpoint_url=dead)).test_client()

    def count(model) -> int:
        return db.execute(select(func.count()).select_from(model)).scalar_one()

    before = (count(MediaFile), count(Job))
    answer = client.post(
        "/api/v1/advanced/profile/avatar/upload",
        headers=alice,
        **images.multipart(images.plain_jpeg(), "a.jpg", "image/jpeg"),
    )
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["type"].endswith("/storage-unavailable")
    assert (count(MediaFile), count(Job)) == before
