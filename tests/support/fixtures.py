"""Shared fixtures: database, app, clients, tokens, and the real Celery worker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from market import manage
from market.config import Settings, load_settings
from sandbox.token import mint


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(read_dotenv=False)


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[str]:
    """This run's database, created and migrated with Alembic (migrations tested every run)."""
    manage.check_postgres(settings.database_url)
    manage.drop_database(settings.database_url)
    manage.create_database(settings.database_url)
    manage.migrate(settings.database_url)
    yield settings.database_url
    from workers import runtime

    for factory in runtime._pools.values():
        factory.kw["bind"].dispose()
    if not os.environ.get("KEEP_TEST_DATABASE"):
        manage.drop_database(settings.database_url)


@pytest.fixture(scope="session")
def app(database: str, settings: Settings) -> Iterator[Flask]:
    from webapp import create_app

    flask_app = create_app(settings)
    flask_app.config["TESTING"] = True
    yield flask_app
    flask_app.extensions["spartan.verifier"].close()
    flask_app.extensions["spartan.engine"].dispose()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def db(app: Flask) -> Iterator[Session]:
    """A session on this run's database; tests commit what a worker or request must see."""
    with app.extensions["spartan.sessions"]() as session:
        yield session


@pytest.fixture(scope="session")
def token(settings: Settings) -> Callable[..., str]:
    def make(uid: str, **kwargs: Any) -> str:
        return mint(uid, project_id=settings.firebase_project_id, **kwargs)

    return make


@pytest.fixture()
def make_user(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """Authorization headers of a brand-new user (admin=True for an admin)."""

    def make(admin: bool = False, **kwargs: Any) -> dict[str, str]:
        uid = f"u-{uuid.uuid4().hex[:12]}"
        return {"Authorization": f"Bearer {token(uid, admin=admin, **kwargs)}"}

    return make


@pytest.fixture()
def alice(make_user: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_user()


@pytest.fixture()
def bob(make_user: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_user()


@pytest.fixture()
def admin(make_user: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_user(admin=True)


@pytest.fixture(scope="session")
def celery_app(database: str) -> Any:
    import celery.contrib.testing.tasks  # noqa: F401  (the worker's ping task)

    import tests.support.tasks  # noqa: F401  (tasks used to test the job machinery)
    from workers.app import app as celery_app

    celery_app.loader.import_default_modules()
    return celery_app


@pytest.fixture(scope="session")
def worker(celery_app: Any) -> Iterator[Any]:
    """A real Celery worker (threads pool) consuming this run's four queues."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=True,
        ping_task_timeout=20,
        loglevel="WARNING",
        shutdown_timeout=20,
        queues=[q.name for q in celery_app.conf.task_queues],
    ) as w:
        yield w


@pytest.fixture()
def user_id_of(client: FlaskClient) -> Callable[[dict[str, str]], uuid.UUID]:
    """The user row id behind a set of Authorization headers (created on first sight)."""

    def find(headers: dict[str, str]) -> uuid.UUID:
        from market.identity.tokens import upsert_user

        identity = client.application.extensions["spartan.verifier"].verify(
            headers["Authorization"].split()[1]
        )
        with client.application.extensions["spartan.sessions"]() as session:
            user = upsert_user(session, identity)
            session.commit()
            return user.id

    return find


@pytest.fixture()
def app_with(app: Flask) -> Iterator[Callable[..., Flask]]:
    """Another app like `app` with some settings changed (e.g. a dead broker); closed after."""
    from dataclasses import replace

    from webapp import create_app

    built: list[Flask] = []

    def make(**changes: Any) -> Flask:
        other = create_app(replace(app.extensions["spartan.settings"], **changes))
        other.config["TESTING"] = True
        built.append(other)
        return other

    yield make
    for other in built:
        other.extensions["spartan.engine"].dispose()
