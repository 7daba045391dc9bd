"""Local storage: atomic writes, safe keys, idempotent deletes, age scans, URLs."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from market.media.storage import LocalStorage, Storage, content_type_for, new_token

KEY = "avatars/u1/tok/256.webp"
BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "avatars/../../outside",
    "avatars/..",
    "./avatars/x.png",
    "avatars//x.png",
    "avatars/x.png/",
    "avatars\\x.png",
    "..\\outside",
    "avatars/.hidden",
    "avatars/x\x00.png",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root, "/media")


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_local_storage_satisfies_the_protocol(storage, root):
    backend: Storage = storage  # mypy checks that LocalStorage matches the protocol
    assert backend.path(KEY) == root / KEY


def test_construction_touches_no_disk(root):
    LocalStorage(root, "/media")
    assert not root.exists()


def test_put_then_get_exists_path(storage, root):
    storage.put(KEY, b"first", content_type="image/webp")
    assert storage.get(KEY) == b"first"
    assert storage.exists(KEY)
    assert storage.path(KEY) == root / "avatars" / "u1" / "tok" / "256.webp"
    assert storage.path(KEY).read_bytes() == b"first"
    assert files_under(root) == [KEY]


def test_put_replaces_and_leaves_no_temporary_file(storage, root):
    storage.put(KEY, b"first", content_type="image/webp")
    storage.put(KEY, b"second", content_type="image/webp")
    assert storage.get(KEY) == b"second"
    assert os.listdir(root / "avatars" / "u1" / "tok") == ["256.webp"]


def test_stored_files_are_readable_by_a_web_server(storage):
    storage.put(KEY, b"x", content_type="image/webp")
    assert stat.S_IMODE(storage.path(KEY).stat().st_mode) == 0o644


def test_a_failed_put_leaves_nothing_behind(storage, root):
    storage.put(KEY, b"kept", content_type="image/webp")
    with pytest.raises(TypeError):
        storage.put(KEY, "not bytes", content_type="image/webp")  # type: ignore[arg-type]
    assert storage.get(KEY) == b"kept"
    assert files_under(root) == [KEY]


def test_concurrent_puts_of_one_key_leave_one_whole_version(storage, root):
    payloads = [bytes([i]) * 200_000 for i in range(8)]

    def write(payload: bytes) -> None:
        for _ in range(10):
            storage.put(KEY, payload, content_type="image/webp")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, payloads))
    assert storage.get(KEY) in payloads
    assert files_under(root) == [KEY]


def test_puts_race_deletes_that_prune_the_same_directory(storage, root):
    # delete() removes directories it leaves empty; a put into that directory must not fail.
    stop = threading.Event()
    sibling = "avatars/u1/tok/64.webp"
    errors: list[Exception] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                storage.put(sibling, b"s", content_type="image/webp")
                storage.delete(sibling)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for i in range(500):
            storage.put(KEY, b"%d" % i, content_type="image/webp")
            assert storage.delete(KEY)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert errors == []
    assert list(root.rglob("*")) == []  # no temporary file, no directory left behind


def test_get_of_a_missing_key_raises(storage):
    with pytest.raises(FileNotFoundError):
        storage.get(KEY)
    assert not storage.exists(KEY)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_that_could_escape_the_root_are_refused(storage, root, key):
    for call in (
        lambda: storage.put(key, b"x", content_type="image/png"),
        lambda: storage.get(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.path(key),
        lambda: storage.url(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert not root.exists()


def test_prefix_that_could_escape_the_root_is_refused(storage):
    with pytest.raises(ValueError):
        list(storage.iter_older_than("../", 0))


def test_delete_is_idempotent_and_prunes_empty_directories(storage, root):
    storage.put(KEY, b"x", content_type="image/webp")
    storage.put("avatars/u1/other/64.jpg", b"y", content_type="image/jpeg")
    assert storage.delete(KEY) is True
    assert storage.delete(KEY) is False
    assert not (root / "avatars" / "u1" / "tok").exists()
    assert (root / "avatars" / "u1" / "other" / "64.jpg").exists()
    assert storage.delete("avatars/u1/other/64.jpg") is True
    assert root.is_dir() and list(root.iterdir()) == []  # the root itself stays


def test_delete_of_a_key_never_stored_is_fine(storage, root):
    assert storage.delete("staging/never.jpg") is False
    assert not root.exists()


def test_iter_older_than_goes_by_modification_time_and_prefix(storage, root):
    for key in (
        "staging/old.jpg",
        "staging/new.jpg",
        "avatars/u1/a/64.webp",
        "avatars/u1/b/64.webp",
        "avatars/u2/c/64.webp",
    ):
        storage.put(key, b"x", content_type=content_type_for(key))
    for key in ("staging/old.jpg", "avatars/u1/a/64.webp", "avatars/u2/c/64.webp"):
        age(storage.path(key), 7200)
    # A write in progress (or one a crash cut short) is not a key.
    temp = root / "staging" / ".old.jpg.abc123.tmp"
    temp.write_bytes(b"partial")
    age(temp, 7200)

    assert list(storage.iter_older_than("staging/", 3600)) == ["staging/old.jpg"]
    assert list(storage.iter_older_than("avatars/", 3600)) == [
        "avatars/u1/a/64.webp",
        "avatars/u2/c/64.webp",
    ]
    assert list(storage.iter_older_than("avatars/u1/", 3600)) == ["avatars/u1/a/64.webp"]
    assert list(storage.iter_older_than("avatars/u", 3600)) == [
        "avatars/u1/a/64.webp",
        "avatars/u2/c/64.webp",
    ]
    assert len(list(storage.iter_older_than("", 3600))) == 3
    assert len(list(storage.iter_older_than("", 0))) == 5
    assert list(storage.iter_older_than("presets/", 0)) == []


def test_deleting_while_iterating_is_fine(storage):
    keys = [f"avatars/u{i}/t/64.webp" for i in range(5)]
    for key in keys:
        storage.put(key, b"x", content_type="image/webp")
        age(storage.path(key), 100)
    seen = []
    for key in storage.iter_older_than("avatars/", 10):
        seen.append(key)
        assert storage.delete(key)
    assert seen == keys
    assert list(storage.iter_older_than("", 0)) == []


def test_iter_older_than_on_a_missing_root_is_empty(storage):
    assert list(storage.iter_older_than("staging/", 0)) == []


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("/media", "/media/avatars/u1/tok/256.webp"),
        ("/media/", "/media/avatars/u1/tok/256.webp"),
        ("https://cdn.example.com/m/", "https://cdn.example.com/m/avatars/u1/tok/256.webp"),
        ("", "/avatars/u1/tok/256.webp"),
    ],
)
def test_url_joins_the_base_and_the_key(root, base_url, expected):
    assert LocalStorage(root, base_url).url(KEY) == expected


def test_url_percent_encodes_unusual_characters(storage):
    assert storage.url("presets/a b/x#1.png") == "/media/presets/a%20b/x%231.png"


def test_new_token_is_unguessable_and_url_safe():
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22,}", token) for token in tokens)


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("avatars/u/t/64.webp", "image/webp"),
        ("avatars/u/t/64.jpg", "image/jpeg"),
        ("staging/x.jpeg", "image/jpeg"),
        ("staging/x.JPG", "image/jpeg"),
        ("staging/x.png", "image/png"),
        ("staging/x.gif", "application/octet-stream"),
        ("staging/x", "application/octet-stream"),
    ],
)
def test_content_type_for_goes_by_extension(key, content_type):
    assert content_type_for(key) == content_type
