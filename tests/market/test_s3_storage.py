"""The S3 backend over HTTP against moto's standalone server: the boto3 code a real bucket gets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from market.errors import StorageUnavailableError
from market.media.storage import Storage, storage_for
from tests.market.test_storage import BAD_KEYS

KEY = "avatars/u1/tok/256.webp"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def storage(s3_settings) -> Storage:
    return storage_for(s3_settings)


def test_put_get_exists_delete_round_trip(storage, s3_settings, s3_server):
    name = s3_settings.s3_prefix + KEY
    assert storage.path(KEY) is None
    assert not storage.exists(KEY)
    storage.put(KEY, b"first", content_type="image/webp")
    storage.put(KEY, b"second", content_type="image/webp")  # replaces: idempotent
    assert storage.exists(KEY) and storage.get(KEY) == b"second"
    head = s3_server.head(name)
    assert head["ContentType"] == "image/webp"
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    # Everything lives under this deployment's prefix, nothing outside it.
    assert s3_server.keys(s3_settings.s3_prefix) == {name}
    assert storage.delete(KEY) is True
    assert storage.delete(KEY) is False  # a missing key is fine
    assert not storage.exists(KEY)
    with pytest.raises(FileNotFoundError):
        storage.get(KEY)
    assert s3_server.keys(s3_settings.s3_prefix) == set()


def test_staged_originals_are_never_cacheable(storage, s3_settings, s3_server):
    storage.put("staging/abc.jpg", b"exif inside", content_type="image/jpeg")
    head = s3_server.head(s3_settings.s3_prefix + "staging/abc.jpg")
    assert head["CacheControl"] == "private, no-store"


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused_before_any_request(storage, s3_settings, s3_server, key):
    for call in (
        lambda: storage.put(key, b"x", content_type="image/png"),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.url(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert s3_server.keys(s3_settings.s3_prefix) == set()


def test_presigned_urls_fetch_the_object(storage, s3_settings):
    storage.put(KEY, b"RIFF-webp", content_type="image/webp")
    url = storage.url(KEY)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [str(s3_settings.s3_url_expires_s)]
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.content == b"RIFF-webp"
    assert answer.headers["Content-Type"] == "image/webp"


def test_public_base_url_names_the_object_key(s3_settings):
    base = "https://cdn.spartan.test/media/"
    storage = storage_for(replace(s3_settings, s3_public_base_url=base.rstrip("/")))
    assert storage.url("presets/a b/x#1.png") == (
        f"https://cdn.spartan.test/media/{s3_settings.s3_prefix}presets/a%20b/x%231.png"
    )


def test_iter_older_than_lists_old_keys_under_the_prefix(storage, s3_settings, s3_server):
    keys = ["avatars/u1/a/64.webp", "avatars/u1/b/64.webp", "avatars/u2/c/64.webp"]
    for key in [*keys, "staging/old.jpg", "presets/p/v1/64.webp"]:
        storage.put(key, b"x", content_type="image/webp")
    for key in (keys[0], keys[2], "staging/old.jpg"):
        s3_server.age(s3_settings.s3_prefix + key, 7200)
    assert list(storage.iter_older_than("avatars/", 3600)) == [keys[0], keys[2]]
    assert list(storage.iter_older_than("avatars/u1/", 3600)) == [keys[0]]
    assert list(storage.iter_older_than("staging/", 3600)) == ["staging/old.jpg"]
    assert list(storage.iter_older_than("avatars/", 3 * 7200)) == []
    # Deleting while iterating is fine.
    for key in storage.iter_older_than("", 3600):
        storage.delete(key)
    assert s3_server.keys(s3_settings.s3_prefix) == {
        s3_settings.s3_prefix + k for k in (keys[1], "presets/p/v1/64.webp")
    }


def test_another_prefix_is_another_deployment(s3_settings, s3_server):
    mine, theirs = storage_for(s3_settings), storage_for(replace(s3_settings, s3_prefix="other/"))
    theirs.put(KEY, b"theirs", content_type="image/webp")
    s3_server.age("other/" + KEY, 7200)
    assert not mine.exists(KEY)
    assert list(mine.iter_older_than("", 0)) == []
    assert theirs.delete(KEY)


def test_an_unreachable_store_is_a_transient_error(s3_settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    storage = storage_for(replace(s3_settings, s3_endpoint_url=dead))
    with pytest.raises(StorageUnavailableError):
        storage.put(KEY, b"x", content_type="image/webp")
    with pytest.raises(StorageUnavailableError):
        storage.exists(KEY)


def test_a_missing_bucket_is_not_a_missing_file(s3_settings):
    storage = storage_for(replace(s3_settings, s3_bucket="no-such-bucket-here"))
    with pytest.raises(StorageUnavailableError):
        storage.get(KEY)


def test_one_client_per_process_and_configuration(s3_settings):
    assert storage_for(s3_settings) is storage_for(s3_settings)
    assert storage_for(replace(s3_settings, s3_prefix="x/")) is not storage_for(s3_settings)


_IMPORTS = """
import sys
from webapp import create_app
from workers.app import app as celery_app
import workers.media, workers.maintenance
app = create_app()
app.test_client().get("/api/v1/profile/avatar/options")
from market.media.storage import storage_for
storage_for(app.extensions["spartan.settings"])
print("boto3" in sys.modules)
"""


@pytest.mark.parametrize(("storage_kind", "loaded"), [("local", "False"), ("s3", "True")])
def test_boto3_is_imported_only_when_s3_is_chosen(s3_server, storage_kind, loaded):
    env = {**os.environ, "MEDIA_STORAGE": storage_kind, "S3_BUCKET": s3_server.bucket}
    env.update({"S3_ENDPOINT_URL": s3_server.endpoint_url, "S3_REGION": "us-east-1"})
    env.update({"S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "s"})
    answer = subprocess.run(
        [sys.executable, "-c", _IMPORTS], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert answer.stdout.strip().splitlines()[-1] == loaded
