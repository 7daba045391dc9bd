"""The avatar workflow, unchanged, on S3-compatible storage (moto's server over HTTP), with the
real worker: upload, render, activation, cleanup of replaced files, presets and the purge."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from PIL import Image

from market.media import avatars
from market.models import MediaFile
from market.models.base import utcnow
from tests.support import images
from tests.support.environment import worker_environment
from tests.support.poll import wait_for
from tests.support.s3 import S3Server, environment_of, s3_changes

pytestmark = pytest.mark.usefixtures("worker")

UPLOAD = "/api/v1/advanced/profile/avatar/upload"
ME = "/api/v1/profile/me"
AVATAR = "/api/v1/profile/me/avatar"
OUTPUTS = {f"{size}.{ext}" for size in (64, 128, 256, 512) for ext in ("webp", "jpg")}


@pytest.fixture()
def s3_app(app_with, s3_server: S3Server) -> Iterator[Any]:
    """The web app and the worker on MEDIA_STORAGE=s3, under a prefix of this test's own."""
    from workers import runtime

    changes = s3_changes(s3_server)
    # The worker reads its settings from the environment.
    with worker_environment(environment_of(changes)):
        assert runtime.settings().media_storage == "s3"
        yield app_with(**changes)


def _prefix(app) -> str:
    return app.extensions["spartan.settings"].s3_prefix


def _upload(client, headers, data: bytes) -> dict[str, Any]:
    answer = client.post(UPLOAD, headers=headers, **images.multipart(data, "a.jpg", "image/jpeg"))
    assert answer.status_code == 202, answer.get_data(as_text=True)
    body = answer.get_json()

    def done():
        job = client.get(body["status_url"], headers=headers).get_json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(done, timeout=30, what="avatar job")
    assert job["state"] == "succeeded", job
    return body


def _avatar_objects(s3_server: S3Server, app, user_id) -> dict[str, set[str]]:
    """Token -> the output names stored for the user's uploads."""
    base = f"{_prefix(app)}avatars/{user_id}/"
    found: dict[str, set[str]] = {}
    for key in s3_server.keys(base):
        token, name = key[len(base) :].split("/")
        found.setdefault(token, set()).add(name)
    return found


def test_upload_renders_into_the_bucket_and_replaces_old_files(s3_app, s3_server, alice, db):
    client = s3_app.test_client()
    uid = client.get(ME, headers=alice).get_json()["user_id"]
    first = _upload(client, alice, images.jpeg_rotated_with_gps())

    profile = client.get(ME, headers=alice).get_json()
    assert profile["avatar"]["source"] == "upload"
    urls = profile["avatar"]["urls"]
    for fmt, per_size in urls.items():
        for size, url in per_size.items():
            assert url.startswith(s3_server.endpoint_url + "/"), url  # presigned, not /media
            answer = requests.get(url, timeout=10)
            assert answer.status_code == 200, url
            assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            image = Image.open(io.BytesIO(answer.content))
            assert (image.format, image.size) == (fmt.upper(), (int(size), int(size)))
            assert not image.getexif() and b"TestCam" not in answer.content
    media = db.get(MediaFile, uuid.UUID(first["media_id"]))
    assert _avatar_objects(s3_server, s3_app, uid) == {media.token: OUTPUTS}
    # The original (with its GPS) is gone from the bucket; /media serves nothing on S3.
    assert s3_server.keys(f"{_prefix(s3_app)}staging/") == set()
    key = f"avatars/{uid}/{media.token}/64.webp"
    assert client.get(f"/media/{key}").status_code == 404

    second = _upload(client, alice, images.plain_jpeg(colour=images.GREEN))
    newer = db.get(MediaFile, uuid.UUID(second["media_id"]))
    assert _avatar_objects(s3_server, s3_app, uid) == {newer.token: OUTPUTS}

    # A preset: rendered into the bucket, the upload's files removed.
    chosen = client.put(AVATAR, json={"preset": "ocean"}, headers=alice)
    assert chosen.status_code == 200, chosen.get_data(as_text=True)
    assert chosen.get_json()["avatar"]["source"] == "preset"
    assert _avatar_objects(s3_server, s3_app, uid) == {}
    preset_objects = s3_server.keys(f"{_prefix(s3_app)}presets/ocean/")
    assert {k.rsplit("/", 1)[1] for k in preset_objects} == OUTPUTS
    for url in chosen.get_json()["avatar_urls"].values():
        assert requests.get(url, timeout=10).status_code == 200


def test_purge_removes_old_staged_and_orphaned_objects(s3_app, s3_server, alice, db, user_id_of):
    from workers.maintenance.media import purge_media

    client = s3_app.test_client()
    active = _upload(client, alice, images.plain_jpeg())
    uid = user_id_of(alice)
    token = db.get(MediaFile, uuid.UUID(active["media_id"])).token
    prefix = _prefix(s3_app)
    storage = avatars.storage_for(s3_app.extensions["spartan.settings"])

    orphans = [f"avatars/{uid}/orphan-token/64.webp", f"avatars/{uid}/orphan-token/64.jpg"]
    young_orphan = f"avatars/{uid}/young-token/64.webp"
    old_staged, young_staged = "staging/old-upload.jpg", "staging/young-upload.jpg"
    for key in (*orphans, young_orphan, old_staged, young_staged):
        storage.put(key, b"x", content_type="image/webp")
    for key in (*orphans, old_staged):
        s3_server.age(prefix + key, 2 * 86400)
    live = {f"avatars/{uid}/{token}/{name}" for name in OUTPUTS}
    for key in live:  # old, but still the avatar: kept
        s3_server.age(prefix + key, 30 * 86400)

    # An upload stuck before activation for a year: failed, its original removed.
    stuck = avatars.stage_upload(
        db,
        storage=storage,
        policy=avatars.policy_for(s3_app.extensions["spartan.settings"]),
        user_id=uid,
        data=images.plain_jpeg(colour=images.GREEN),
    )
    stuck.created_at = utcnow().replace(year=utcnow().year - 1)
    db.commit()
    assert storage.exists(stuck.original_key)

    result = purge_media.apply(throw=True).get()["purged"]
    # Orphans and staged files are counted in this test's prefix alone; stuck uploads in the
    # whole database (others' are failed too, if any).
    assert (result["staged"], result["orphans"]) == (1, 2) and result["expired_uploads"] >= 1
    remaining = {key[len(prefix) :] for key in s3_server.keys(prefix)}
    assert remaining == live | {young_orphan, young_staged}
    db.expire_all()
    assert db.get(MediaFile, stuck.id).state == "failed"
    again = purge_media.apply(throw=True).get()["purged"]
    assert (again["staged"], again["orphans"], again["expired_uploads"]) == (0, 0, 0)
