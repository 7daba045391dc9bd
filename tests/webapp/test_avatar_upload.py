"""Avatar upload refusals: too big (413), not an allowed image (415), bomb or corrupt (422).

Each refusal must leave nothing behind: no file under the media root, no row, no job.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from market.models import Job, MediaFile
from tests.support import images

UPLOAD = "/api/v1/advanced/profile/avatar/upload"


def post(client, headers, data: bytes, filename="avatar.jpg", content_type="image/jpeg"):
    return client.post(UPLOAD, headers=headers, **images.multipart(data, filename, content_type))


def _counts(db, user_id):
    media = db.execute(
        select(func.count()).select_from(MediaFile).where(MediaFile.user_id == user_id)
    ).scalar_one()
    jobs = db.execute(
        select(func.count()).select_from(Job).where(Job.owner_id == user_id)
    ).scalar_one()
    return media, jobs


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("bomb_400_megapixels", 422),
        ("bomb_50_megapixels", 422),
        ("truncated_jpeg", 422),
        ("php_named_jpg", 415),
        ("zero_bytes", 422),
        ("oversize", 413),
    ],
)
def test_refused_uploads_store_nothing(
    client, alice, db, user_id_of, media_root, settings, case, status
):
    data = {
        "bomb_400_megapixels": lambda: images.png_bomb(20000, 20000),
        "bomb_50_megapixels": lambda: images.png_bomb(7100, 7100),
        "truncated_jpeg": images.truncated_jpeg,
        "php_named_jpg": lambda: images.PHP,
        "zero_bytes": lambda: b"",
        # A real JPEG start, padded past the limit: refused by size before anything else.
        "oversize": lambda: images.plain_jpeg() + b"\0" * settings.avatar_max_bytes,
    }[case]()
    uid = user_id_of(alice)
    before = images.tree(media_root)
    response = post(client, alice, data)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"]
    assert images.tree(media_root) == before
    assert _counts(db, uid) == (0, 0)


def test_declared_length_over_the_limit_is_refused_before_reading(client, alice, settings):
    response = client.post(
        UPLOAD,
        data=b"x" * 16,
        headers={**alice, "Content-Type": "multipart/form-data; boundary=x"},
        # The client claims a huge body; only 16 bytes exist, and none may be read.
        environ_overrides={"CONTENT_LENGTH": str(settings.avatar_max_bytes * 2)},
    )
    assert response.status_code == 413


def test_missing_file_part_is_422(client, alice):
    response = client.post(UPLOAD, data={}, headers=alice, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "file" in response.get_json()["errors"]["files"]


def test_upload_needs_a_user(client):
    assert post(client, {}, images.plain_jpeg()).status_code == 401
