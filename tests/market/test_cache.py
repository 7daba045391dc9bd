"""Cache-aside: hits, invalidation by web and worker, no stale re-population, Redis outages."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import select

from market.models import Profile
from tests.support.poll import wait_for
from workers import runtime
from workers.app import app as celery_app
from workers.base import StepTask


@celery_app.task(base=StepTask, name="maintenance.test_rename_profile")
def rename_profile(*, user_id: str, name: str) -> None:
    """A worker-side write: commit, then invalidate (the order every writer follows)."""
    with runtime.transaction() as session:
        profile = session.get(Profile, uuid.UUID(user_id))
        profile.display_name = name
    runtime.cache().invalidate("profile", user_id)


def _profile_of(app, user_id: uuid.UUID) -> dict:
    with app.extensions["spartan.sessions"]() as session:
        profile = session.execute(select(Profile).where(Profile.user_id == user_id)).scalar_one()
        return {"display_name": profile.display_name, "version": profile.version}


def _rename(app, user_id: uuid.UUID, name: str) -> None:
    with app.extensions["spartan.sessions"]() as session, session.begin():
        session.get(Profile, user_id).display_name = name


class Loads:
    """A loader that counts its calls."""

    def __init__(self, load):
        self.load, self.calls = load, 0

    def __call__(self):
        self.calls += 1
        return self.load()


@pytest.fixture()
def user(app, alice, user_id_of) -> uuid.UUID:
    uid = user_id_of(alice)
    with app.extensions["spartan.sessions"]() as session, session.begin():
        if session.get(Profile, uid) is None:
            session.add(Profile(user_id=uid, display_name="first"))
    _rename(app, uid, "first")
    return uid


def test_second_read_is_a_hit_in_json_form(app, user):
    cache = app.extensions["spartan.cache"]
    loads = Loads(lambda: {"name": "x", "id": user})
    first = cache.get_or_load("profile", str(user), loads)
    second = cache.get_or_load("profile", str(user), loads)
    assert first == second == {"name": "x", "id": str(user)}
    assert loads.calls == 1


@pytest.mark.usefixtures("worker")
def test_a_write_by_a_worker_invalidates_what_the_web_cached(app, user):
    cache = app.extensions["spartan.cache"]
    loads = Loads(lambda: _profile_of(app, user))
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "first"
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "first"
    assert loads.calls == 1
    rename_profile.delay(user_id=str(user), name="from-worker").get(timeout=20)
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "from-worker"
    assert loads.calls == 2


@pytest.mark.parametrize("drop", ["entry", "namespace", "user"])
def test_a_reader_that_loaded_before_the_write_cannot_recache_the_old_value(app, user, drop):
    cache = app.extensions["spartan.cache"]
    namespace = "public_profile" if drop == "namespace" else "profile"

    def slow_reader():
        old = _profile_of(app, user)
        # While this reader still holds the old row, a writer commits and invalidates.
        _rename(app, user, "new")
        if drop == "entry":
            cache.invalidate(namespace, str(user))
        elif drop == "namespace":
            cache.invalidate_namespace(namespace)
        else:
            cache.invalidate_user(user)
        return old

    assert cache.get_or_load(namespace, str(user), slow_reader)["display_name"] == "first"
    loads = Loads(lambda: _profile_of(app, user))
    assert cache.get_or_load(namespace, str(user), loads)["display_name"] == "new"
    assert loads.calls == 1


def test_admin_drops_a_users_entries_and_all_public_profiles(client, app, admin, alice, user):
    cache = app.extensions["spartan.cache"]
    other = str(uuid.uuid4())
    for namespace, ident in (
        ("profile", str(user)),
        ("balance", str(user)),
        ("public_profile", other),
    ):
        cache.get_or_load(namespace, ident, lambda: "cached")
    assert client.delete(f"/api/v1/advanced/cache/user/{user}", headers=alice).status_code == 403
    assert client.delete(f"/api/v1/advanced/cache/user/{user}", headers=admin).status_code == 204
    for namespace in ("profile", "balance"):
        assert cache.get_or_load(namespace, str(user), lambda: "fresh") == "fresh"
    assert cache.get_or_load("public_profile", other, lambda: "fresh") == "cached"
    assert client.delete("/api/v1/advanced/cache/public-profiles", headers=alice).status_code == 403
    assert client.delete("/api/v1/advanced/cache/public-profiles", headers=admin).status_code == 204
    assert cache.get_or_load("public_profile", other, lambda: "fresh") == "fresh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def private_redis() -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server of this test alone, on its own port (the test may kill it)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url, socket_connect_timeout=0.2)

    def up() -> bool:
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    wait_for(up, timeout=10, what="the private redis-server")
    try:
        yield url, proc
    finally:
        probe.close()
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_reads_answer_from_the_database_when_redis_dies(
    app_with, private_redis, alice, admin, user
):
    url, proc = private_redis
    app = app_with(redis_url=url)
    client = app.test_client()
    cache = app.extensions["spartan.cache"]
    loads = Loads(lambda: _profile_of(app, user))
    cache.get_or_load("profile", str(user), loads)
    cache.get_or_load("profile", str(user), loads)
    assert loads.calls == 1

    proc.kill()
    proc.wait()
    # Every read still answers, from PostgreSQL.
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "first"
    _rename(app, user, "while-down")
    cache.invalidate("profile", str(user))  # owed, replayed once Redis answers again
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "while-down"
    assert loads.calls == 3
    assert client.get("/api/v1/advanced/tasks", headers=alice).status_code == 200
    body = client.get("/api/v1/advanced/health", headers=admin).get_json()  # a fresh check
    assert body["checks"]["redis"]["status"] == "degraded"
    assert client.get("/api/openapi.json").status_code == 200


@pytest.mark.slow
def test_an_invalidation_lost_to_a_redis_blip_is_replayed_before_the_next_read(
    app_with, private_redis, user
):
    url, _ = private_redis
    app = app_with(redis_url=url)
    cache = app.extensions["spartan.cache"]
    loads = Loads(lambda: _profile_of(app, user))
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "first"

    # Redis stops answering (clients time out) but keeps its data, stale entry included.
    redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", "1500", "ALL")
    _rename(app, user, "after-blip")
    cache.invalidate("profile", str(user))
    # Never the stale value: from the database while Redis is away, and after it is back.
    assert cache.get_or_load("profile", str(user), loads)["display_name"] == "after-blip"
    probe = redis.Redis.from_url(url, socket_timeout=0.2)

    def answering() -> bool:
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    wait_for(answering, timeout=10, what="redis to answer again")
    answers = {cache.get_or_load("profile", str(user), loads)["display_name"] for _ in range(3)}
    assert answers == {"after-blip"}
