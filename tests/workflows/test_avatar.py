"""The avatar workflow end to end, with a real worker: upload → process → activate → notify."""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from market.media import avatars
from market.models import Job, MediaFile, Notification, Profile
from market.models.base import utcnow
from tests.support import images
from tests.support.poll import wait_for

pytestmark = pytest.mark.usefixtures("worker")

UPLOAD = "/api/v1/advanced/profile/avatar/upload"
ME = "/api/v1/profile/me"
SIZES = {"64", "128", "256", "512"}


def upload(client, headers, data: bytes, filename="a.jpg", content_type="image/jpeg"):
    response = client.post(
        UPLOAD, headers=headers, **images.multipart(data, filename, content_type)
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return response


def finished(client, headers, status_url: str) -> dict:
    def probe():
        body = client.get(status_url, headers=headers).get_json()
        return body if body["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(probe, timeout=30, what=f"job {status_url}")


def user_files(media_root: Path, user_id) -> set[str]:
    base = media_root / "avatars" / str(user_id)
    return (
        {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
        if base.exists()
        else set()
    )


def staged(media_root: Path, token: str) -> list[Path]:
    return list((media_root / "staging").glob(f"{token}.*"))


def fetch_image(client, url: str) -> tuple[Image.Image, bytes]:
    with client.get(url) as response:
        assert response.status_code == 200, url
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        data = response.data
    return Image.open(io.BytesIO(data)), data


def test_rotated_jpeg_with_gps_comes_out_upright_without_metadata(
    client, alice, bob, db, user_id_of, media_root
):
    public = f"/api/v1/users/{user_id_of(alice)}/profile"
    # Cached before the upload: the worker's activation must drop both entries.
    assert client.get(ME, headers=alice).get_json()["avatar_urls"] == {}
    assert client.get(public, headers=bob).get_json()["avatar_urls"] == {}
    response = upload(client, alice, images.jpeg_rotated_with_gps())
    body = response.get_json()
    assert response.headers["Location"] == body["status_url"]
    job = finished(client, alice, body["status_url"])
    assert job["state"] == "succeeded", job
    assert [s["name"] for s in job["steps"]] == [
        "process_avatar",
        "activate_avatar",
        "dispatch_pending",
    ]

    profile = client.get(ME, headers=alice).get_json()
    assert profile["avatar"]["source"] == "upload"
    assert profile["avatar"]["media_id"] == body["media_id"]
    assert set(profile["avatar_urls"]) == SIZES
    assert client.get(public, headers=bob).get_json()["avatar_urls"] == profile["avatar_urls"]
    urls = profile["avatar"]["urls"]
    assert set(urls) == {"webp", "jpeg"}
    for fmt, per_size in urls.items():
        assert set(per_size) == SIZES
        for size, url in per_size.items():
            image, raw = fetch_image(client, url)
            assert image.format == fmt.upper()
            assert image.size == (int(size), int(size))
            rgb = image.convert("RGB")
            for (fx, fy), colour in zip(
                ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)),
                images.QUADRANTS.values(),
                strict=True,
            ):
                assert images.close(images.pixel(rgb, fx, fy), colour), (url, fx, fy)
            # No EXIF (orientation, camera, GPS), no XMP, in any output.
            assert not image.getexif(), url
            assert "exif" not in image.info and "xmp" not in image.info, url
            assert b"Exif" not in raw and b"EXIF" not in raw and b"TestCam" not in raw, url

    media = db.get(MediaFile, uuid.UUID(body["media_id"]))
    assert media.state == "active"
    assert not staged(media_root, media.token)  # the original (with its GPS) is gone
    notes = db.execute(
        select(Notification).where(Notification.dedupe_key == f"avatar:{media.id}:activated")
    ).scalars()
    assert [n.kind for n in notes] == ["avatar.updated"]


def test_png_with_transparency(client, alice, db):
    body = upload(client, alice, images.png_with_transparency(), "p.png", "image/png").get_json()
    assert finished(client, alice, body["status_url"])["state"] == "succeeded"
    urls = client.get(ME, headers=alice).get_json()["avatar"]["urls"]
    webp, _ = fetch_image(client, urls["webp"]["256"])
    jpeg, _ = fetch_image(client, urls["jpeg"]["256"])
    assert jpeg.mode == "RGB"
    # The disc survives in both; the transparent corner stays transparent in WebP and is
    # flattened to an opaque colour in JPEG (which has no alpha).
    assert images.close(images.pixel(webp.convert("RGBA"), 0.5, 0.5)[:3], images.RED)
    assert images.close(images.pixel(jpeg, 0.5, 0.5), images.RED)
    assert webp.convert("RGBA").getpixel((2, 2))[3] == 0
    assert len(jpeg.getpixel((2, 2))) == 3


def test_mislabelled_png_is_judged_by_its_bytes(client, alice, db):
    response = upload(client, alice, images.png_with_transparency(), "photo.gif", "image/gif")
    media = db.get(MediaFile, uuid.UUID(response.get_json()["media_id"]))
    assert (media.original_format, media.original_key.rsplit(".", 1)[1]) == ("png", "png")
    assert finished(client, alice, response.get_json()["status_url"])["state"] == "succeeded"


def test_racing_uploads_end_with_the_newer_one_and_no_orphans(
    client, alice, db, user_id_of, media_root
):
    uid = user_id_of(alice)
    first = upload(client, alice, images.plain_jpeg(colour=images.RED)).get_json()
    second = upload(client, alice, images.plain_jpeg(colour=images.GREEN)).get_json()
    for body in (first, second):
        assert finished(client, alice, body["status_url"])["state"] == "succeeded"
    db.expire_all()
    older = db.get(MediaFile, uuid.UUID(first["media_id"]))
    newer = db.get(MediaFile, uuid.UUID(second["media_id"]))
    assert db.get(Profile, uid).avatar_media_id == newer.id
    assert (older.state, newer.state) == ("replaced", "active")
    assert {f.split("/")[0] for f in user_files(media_root, uid)} == {newer.token}
    assert not staged(media_root, older.token) and not staged(media_root, newer.token)


def _stage(db, user_id, data: bytes) -> MediaFile:
    from workers import runtime

    s = runtime.settings()
    media = avatars.stage_upload(
        db,
        storage=avatars.storage_for(s),
        policy=avatars.policy_for(s),
        user_id=user_id,
        data=data,
    )
    db.commit()
    return media


def test_older_upload_finishing_last_does_not_win_and_reruns_are_harmless(
    alice, db, user_id_of, media_root
):
    from workers.media import activate_avatar, process_avatar

    uid = user_id_of(alice)
    older = _stage(db, uid, images.plain_jpeg(colour=images.RED))
    newer = _stage(db, uid, images.plain_jpeg(colour=images.GREEN))
    assert older.seq < newer.seq

    def run(task, media):
        return task.apply(kwargs={"media_id": str(media.id)}, throw=True).get()

    run(process_avatar, newer)
    run(activate_avatar, newer)
    written = images.tree(media_root / "avatars" / str(uid))
    # Reruns of both steps: nothing rendered again, nothing written, nothing notified again.
    assert run(process_avatar, newer)["rendered"] == 0
    assert run(activate_avatar, newer)["avatar"] == "unchanged"
    assert images.tree(media_root / "avatars" / str(uid)) == written

    run(process_avatar, older)
    assert run(activate_avatar, older)["avatar"] == "superseded"
    db.expire_all()
    assert db.get(Profile, uid).avatar_media_id == newer.id
    assert db.get(MediaFile, older.id).state == "replaced"
    assert {f.split("/")[0] for f in user_files(media_root, uid)} == {newer.token}
    assert not staged(media_root, older.token)
    notes = db.execute(
        select(Notification).where(
            Notification.user_id == uid, Notification.kind == "avatar.updated"
        )
    ).scalars()
    assert len(list(notes)) == 1


def test_bad_image_data_fails_once_and_leaves_nothing(client, alice, db, user_id_of, media_root):
    from workers import runtime
    from workflows.avatar import start_avatar_upload

    uid = user_id_of(alice)
    media = _stage(db, uid, images.jpeg_rotated_with_gps())
    # The staged bytes go bad after the upload checks (a disk fault, a tampered file).
    (staged_path,) = staged(media_root, media.token)
    staged_path.write_bytes(images.truncated_jpeg())
    job = start_avatar_upload(db, owner_id=uid, media_id=media.id)
    db.commit()

    def done():
        db.expire_all()
        row = db.get(Job, job.id)
        return row if row.state in ("failed", "succeeded") else None

    row = wait_for(done, timeout=30, what="avatar job")
    assert row.state == "failed"
    steps = {s.name: s for s in row.steps}
    assert steps["process_avatar"].state == "failed"
    assert steps["process_avatar"].attempts == 1
    assert "InvalidImageError" in steps["process_avatar"].error_detail
    assert steps["process_avatar"].error_code == "invalid-image"
    assert steps["process_avatar"].error == "corrupt or truncated image"
    assert steps["activate_avatar"].state == "skipped"
    assert db.get(MediaFile, media.id).state == "failed"
    assert db.get(Profile, uid).avatar_media_id is None
    assert user_files(media_root, uid) == set()
    assert not staged(media_root, media.token)
    assert runtime.settings().media_root == media_root


def _age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_purge_media_removes_old_staged_and_orphaned_files(
    client, alice, db, user_id_of, media_root
):
    from workers.maintenance.media import purge_media

    body = upload(client, alice, images.plain_jpeg()).get_json()
    assert finished(client, alice, body["status_url"])["state"] == "succeeded"
    uid = user_id_of(alice)
    active = db.get(MediaFile, uuid.UUID(body["media_id"]))

    orphan_dir = media_root / "avatars" / str(uid) / "orphan-token"
    orphan_dir.mkdir(parents=True)
    orphans = [orphan_dir / "64.webp", orphan_dir / "64.jpg"]
    young_orphan = media_root / "avatars" / str(uid) / "young-token" / "64.webp"
    young_orphan.parent.mkdir(parents=True)
    old_staged = media_root / "staging" / "old-upload.jpg"
    young_staged = media_root / "staging" / "young-upload.jpg"
    for path in (*orphans, young_orphan, old_staged, young_staged):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    for path in (*orphans, old_staged):
        _age(path, 2)
    live_files = list((media_root / "avatars" / str(uid) / active.token).iterdir())
    for path in live_files:  # old, but still the avatar: kept
        _age(path, 30)

    # An upload stuck before activation for two days: failed, its files removed.
    stuck = _stage(db, uid, images.plain_jpeg(colour=images.GREEN))
    stuck.created_at = utcnow().replace(year=utcnow().year - 1)
    db.commit()

    result = purge_media.apply(throw=True).get()["purged"]
    assert result["orphans"] >= 2 and result["staged"] >= 1 and result["expired_uploads"] >= 1
    assert not any(p.exists() for p in (*orphans, old_staged))
    assert young_orphan.exists() and young_staged.exists()
    assert all(p.exists() for p in live_files)
    db.expire_all()
    assert db.get(MediaFile, stuck.id).state == "failed"
    assert not staged(media_root, stuck.token)
    # A second run finds nothing more to do.
    again = purge_media.apply(throw=True).get()["purged"]
    assert again["orphans"] == 0 and again["expired_uploads"] == 0
    young_orphan.unlink()
    young_staged.unlink()
