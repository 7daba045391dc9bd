"""Settings of the edge (issue 14): FRONTEND_URL origins, TRUSTED_PROXIES, media storage."""

from __future__ import annotations

import pytest

from market.config import MAX_PRESIGNED_S, load_settings
from market.errors import ConfigurationError

BASE = {"APP_ENV": "test"}


def _load(**env: str):
    return load_settings({**BASE, **env}, read_dotenv=False)


def test_frontend_url_may_list_several_origins():
    s = _load(FRONTEND_URL="https://App.Spartan.market/shop/, http://localhost:5173 ,")
    assert s.cors_origins == ("https://app.spartan.market", "http://localhost:5173")
    # Checkout back-URLs go to the first one, path kept.
    assert s.frontend_url == "https://App.Spartan.market/shop"


@pytest.mark.parametrize("value", ["*", "app.spartan.market", "ftp://x.test", ",", "https://"])
def test_frontend_url_must_be_http_urls(value):
    with pytest.raises(ConfigurationError, match="FRONTEND_URL"):
        _load(FRONTEND_URL=value)


def test_trusted_proxies_default_and_bad_values():
    assert _load().trusted_proxies == 0
    assert _load(TRUSTED_PROXIES="2").trusted_proxies == 2
    for bad in ("-1", "one"):
        with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
            _load(TRUSTED_PROXIES=bad)


def test_media_storage_defaults_to_local_disk():
    s = _load()
    assert (s.media_storage, s.s3_bucket, s.s3_prefix) == ("local", None, "")


def test_s3_settings():
    s = _load(
        MEDIA_STORAGE="S3",
        S3_BUCKET="media",
        S3_PREFIX="/prod/avatars/",
        S3_ENDPOINT_URL="https://acct.r2.cloudflarestorage.com",
        S3_REGION="auto",
        S3_PUBLIC_BASE_URL="https://cdn.spartan.market/",
    )
    assert s.media_storage == "s3"
    assert (s.s3_bucket, s.s3_prefix, s.s3_region) == ("media", "prod/avatars/", "auto")
    assert s.s3_public_base_url == "https://cdn.spartan.market"
    assert s.s3_url_expires_s == MAX_PRESIGNED_S


def test_s3_needs_a_bucket_and_sane_values():
    with pytest.raises(ConfigurationError, match="S3_BUCKET"):
        _load(MEDIA_STORAGE="s3")
    with pytest.raises(ConfigurationError, match="MEDIA_STORAGE"):
        _load(MEDIA_STORAGE="ftp")
    for expires in ("0", str(MAX_PRESIGNED_S + 1)):
        with pytest.raises(ConfigurationError, match="S3_URL_EXPIRES_S"):
            _load(MEDIA_STORAGE="s3", S3_BUCKET="b", S3_URL_EXPIRES_S=expires)


def test_blank_media_settings_count_as_unset():
    # docker-compose passes every optional setting, empty when the operator left it out.
    blank = {name: "" for name in ("S3_BUCKET", "S3_PREFIX", "S3_ENDPOINT_URL", "S3_REGION")}
    blank |= {"S3_PUBLIC_BASE_URL": "", "S3_ACCESS_KEY_ID": "", "S3_SECRET_ACCESS_KEY": ""}
    local = _load(MEDIA_STORAGE="", **blank)
    assert local.media_storage == "local"
    assert (local.s3_bucket, local.s3_endpoint_url, local.s3_region) == (None, None, None)
    assert local.s3_access_key_id is None and local.s3_public_base_url is None
    with pytest.raises(ConfigurationError, match="S3_BUCKET"):
        _load(MEDIA_STORAGE="s3", **blank)
