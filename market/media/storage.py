"""Where media files live: a small key/value interface and its local-disk backend.

Keys are relative POSIX paths (`staging/<token>.jpg`, `avatars/<user>/<token>/256.webp`).
A key never starts with `/`, never holds `..`, `.`, an empty part, a part starting with a dot,
a backslash or a NUL: so a key cannot leave the root, and names starting with a dot are free
for the temporary files of writes in progress.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import quote

from market.config import Settings

CONTENT_TYPES = {
    ".webp": "image/webp",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
TEMP_SUFFIX = ".tmp"
# The permissions of stored files: mkstemp makes them 0600, but a web server or CDN origin
# that serves the media root runs as another user and must be able to read them.
FILE_MODE = 0o644
PUT_ATTEMPTS = 10


class Storage(Protocol):
    """Files by key. Writes are atomic: a reader sees the old bytes or the new, never a part."""

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there (idempotent)."""

    def get(self, key: str) -> bytes:
        """The bytes under `key`; FileNotFoundError if there are none."""

    def exists(self, key: str) -> bool:
        """Whether something is stored under `key`."""

    def delete(self, key: str) -> bool:
        """Remove `key`; True if it was there. A missing key is fine (idempotent)."""

    def url(self, key: str) -> str:
        """The public URL of `key` (no check that it exists)."""

    def path(self, key: str) -> Path | None:
        """The local file of `key`, or None for a backend without local files."""

    def iter_older_than(self, prefix: str, age_s: float) -> Iterator[str]:
        """Keys starting with `prefix` last written more than `age_s` seconds ago."""


def storage_for(settings: Settings) -> Storage:
    """The media storage MEDIA_STORAGE names: local disk, or an S3-compatible bucket."""
    if settings.media_storage == "s3":
        return _s3_storage(os.getpid(), settings)
    return LocalStorage(settings.media_root, settings.media_url)


@lru_cache(maxsize=8)
def _s3_storage(pid: int, settings: Settings) -> Storage:
    # One client per process and configuration: building one costs milliseconds, and a
    # forked worker child must not share its parent's connections (hence the pid).
    from market.media.s3 import S3Storage  # imports boto3: only when S3 is chosen

    assert settings.s3_bucket is not None  # load_settings requires it with MEDIA_STORAGE=s3
    return S3Storage(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        public_base_url=settings.s3_public_base_url,
        url_expires_s=settings.s3_url_expires_s,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )


def new_token() -> str:
    """A fresh unguessable, URL- and path-safe name part (128 random bits)."""
    return secrets.token_urlsafe(16)


def content_type_for(key: str) -> str:
    """The MIME type of a key, from its extension."""
    return CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), DEFAULT_CONTENT_TYPE)


def check_key(key: str) -> str:
    """Return `key` unchanged, or raise ValueError if it is not a safe relative POSIX path."""
    if not isinstance(key, str) or not key:
        raise ValueError("a storage key must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"storage key {key!r} must be a relative POSIX path")
    for part in key.split("/"):
        if not part or part.startswith("."):
            raise ValueError(f"storage key {key!r} has an empty, '.', '..' or hidden part")
    return key


class LocalStorage:
    """Files under a root directory, served by the web layer (development) or a web server."""

    def __init__(self, root: Path, base_url: str) -> None:
        # No disk access here: the root is created on the first write.
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")

    def path(self, key: str) -> Path:
        """The file of `key` under the root; ValueError for a key that could escape it."""
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Write to a temporary file beside the target, fsync, then rename over it (atomic).

        `content_type` is not stored: locally the extension decides (see content_type_for).
        """
        target = self.path(key)
        fd, tmp = self._temp_file(target)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent)

    def _temp_file(self, target: Path) -> tuple[int, str]:
        # A concurrent delete may prune the (then empty) directory at any moment before the
        # temporary file exists: mkdir then finds it both there and gone (FileExistsError),
        # or mkstemp finds no directory. Try again. Once the temporary file exists, the
        # directory is not empty and stays until the rename.
        for attempt in range(PUT_ATTEMPTS):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(
                    dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX
                )
            except (FileNotFoundError, FileExistsError):
                if attempt == PUT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes:
        """The bytes under `key`; FileNotFoundError if there are none."""
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        """Whether a file is stored under `key`."""
        return self.path(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove `key` and the directories it leaves empty; True if it was there (idempotent)."""
        target = self.path(key)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        self._prune(target.parent)
        return True

    def _prune(self, directory: Path) -> None:
        # Best effort: a directory that is not empty (or was just refilled by a concurrent
        # put) stays. The root itself is never removed.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def url(self, key: str) -> str:
        """`<base_url>/<key>`, the key percent-encoded except for its slashes."""
        return f"{self.base_url}/{quote(check_key(key))}"

    def iter_older_than(self, prefix: str, age_s: float) -> Iterator[str]:
        """Keys starting with `prefix` whose file was modified more than `age_s` seconds ago.

        Lazy and sorted by key within each directory. Deleting keys while iterating is fine:
        files and directories that vanish are skipped. Temporary files are not keys.
        """
        cutoff = time.time() - age_s
        folder = prefix.rpartition("/")[0]
        start = self.path(folder) if folder else self.root
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if name.startswith(".") or not key.startswith(prefix):
                    continue
                try:
                    info = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    yield key


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:  # the file was deleted and its directory pruned meanwhile
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
