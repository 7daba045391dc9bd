"""The S3-compatible storage backend (AWS S3, Cloudflare R2, MinIO, GCS interoperability).

Imported only when MEDIA_STORAGE=s3 (see `market.media.avatars.storage_for`): the web
process of a local-disk deployment never loads boto3.

Object keys are `S3_PREFIX` + the storage key. A PUT replaces an object whole, so readers see
the old bytes or the new, as the Storage protocol asks. Rendered avatars and presets carry a
year-long immutable Cache-Control (their keys are never reused); staged originals (with their
EXIF) carry `private, no-store` and must stay unreadable from outside: expose only the
`avatars/` and `presets/` prefixes if the bucket is public (README, "Media storage").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from market.errors import StorageUnavailableError
from market.media.storage import check_key

PUBLIC_CACHE_CONTROL = "public, max-age=31536000, immutable"
PRIVATE_CACHE_CONTROL = "private, no-store"
PRIVATE_PREFIXES = ("staging/",)
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Storage:
    """Files by key in one bucket, under an optional prefix; URLs public or presigned."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        public_base_url: str | None = None,
        url_expires_s: int = 7 * 24 * 3600,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.url_expires_s = url_expires_s
        config = Config(
            signature_version="s3v4",
            # Custom endpoints (MinIO, R2, GCS, a local test server) are reached by path: a
            # bucket-named host would need DNS for every bucket.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=3,
            read_timeout=10,
            # Checksums only where S3 requires them: not every S3-compatible store has the
            # newer default ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own: boto3's default session is not thread-safe to create clients
        # from, while a client is safe to share between the threads of a worker or server.
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _object(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Upload `data` under `key` with its content type and cache policy (idempotent)."""
        private = key.startswith(PRIVATE_PREFIXES)
        with _unavailable_as_error():
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._object(key),
                Body=data,
                ContentType=content_type,
                CacheControl=PRIVATE_CACHE_CONTROL if private else PUBLIC_CACHE_CONTROL,
            )

    def get(self, key: str) -> bytes:
        """The bytes under `key`; FileNotFoundError if there are none."""
        with _unavailable_as_error(missing=key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
            return answer["Body"].read()

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (one HEAD request)."""
        try:
            with _unavailable_as_error(missing=key):
                self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> bool:
        """Remove `key`; True if it was there. A missing key is fine (idempotent)."""
        existed = self.exists(key)
        with _unavailable_as_error():
            self.client.delete_object(Bucket=self.bucket, Key=self._object(key))
        return existed

    def url(self, key: str) -> str:
        """`<S3_PUBLIC_BASE_URL>/<object key>`, or a presigned GET valid S3_URL_EXPIRES_S."""
        name = self._object(key)
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(name)}"
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": name},
                ExpiresIn=self.url_expires_s,
            )
        )

    def path(self, key: str) -> None:
        """No local file: objects live in the bucket."""
        check_key(key)
        return None

    def iter_older_than(self, prefix: str, age_s: float) -> Iterator[str]:
        """Keys starting with `prefix` last written more than `age_s` seconds ago.

        Lazy, a page of up to 1000 keys at a time, in key order. Deleting keys while
        iterating is fine (the listing continues after the last key it returned).
        """
        cutoff = time.time() - age_s
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        with _unavailable_as_error():
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    if item["LastModified"].timestamp() < cutoff and _is_key(key):
                        yield key


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:  # an object someone else put there (e.g. "a//b"): not ours to touch
        return False
    return True


@contextmanager
def _unavailable_as_error(missing: str | None = None) -> Iterator[None]:
    """A missing object becomes FileNotFoundError; anything else the store or the network
    failed at becomes StorageUnavailableError (retried by workers, 503 in the API)."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if missing is not None and code in _MISSING:
            raise FileNotFoundError(missing) from exc
        raise StorageUnavailableError(f"media storage refused the request: {code}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailableError(f"media storage unreachable: {exc}") from exc
