"""An S3-compatible endpoint for tests: moto's standalone server, reached over HTTP by boto3.

`s3_server` (session) starts `moto.server.ThreadedMotoServer` on a free loopback port and
creates this run's bucket; `s3_settings` are the test settings with MEDIA_STORAGE=s3 pointed
at it (a prefix of each test's own). The storage code under test is the same boto3 code a
real bucket (AWS, R2, MinIO, GCS interop) gets; only the endpoint URL differs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from market.config import Settings

REGION = "us-east-1"
# moto accepts any credentials; real stores get theirs from S3_ACCESS_KEY_ID and friends.
CREDENTIALS = {"s3_access_key_id": "test-key", "s3_secret_access_key": "test-secret"}


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    client: Any  # a boto3 S3 client of the test's own, to look at the bucket directly

    def keys(self, prefix: str = "") -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return {item["Key"] for page in pages for item in page.get("Contents", ())}

    def head(self, key: str) -> dict[str, Any]:
        return self.client.head_object(Bucket=self.bucket, Key=key)

    def age(self, key: str, seconds: float) -> None:
        """Make an object look `seconds` older (the bucket's own clock; like os.utime)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[self.bucket]
        stored = bucket.keys[key]
        stored.last_modified = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def s3_server(run_id: str) -> Iterator[S3Server]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["s3_access_key_id"],
        aws_secret_access_key=CREDENTIALS["s3_secret_access_key"],
    )
    bucket = f"spartan-media-{run_id}"
    client.create_bucket(Bucket=bucket)
    try:
        yield S3Server(endpoint, bucket, client)
    finally:
        server.stop()


def s3_changes(server: S3Server, **overrides: Any) -> dict[str, Any]:
    """Settings fields for MEDIA_STORAGE=s3 on `server`, under a prefix of the caller's own."""
    return {
        "media_storage": "s3",
        "s3_bucket": server.bucket,
        "s3_prefix": f"t-{uuid.uuid4().hex[:8]}/",
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": REGION,
        **CREDENTIALS,
        **overrides,
    }


def environment_of(changes: dict[str, Any]) -> dict[str, str]:
    """The environment variables that load_settings turns into these fields."""
    return {name.upper(): str(value) for name, value in changes.items() if value is not None}


@pytest.fixture()
def s3_settings(settings: Settings, s3_server: S3Server) -> Settings:
    return replace(settings, **s3_changes(s3_server))
