"""Fixtures of the fault tests: deployments of their own, a private Redis, a PostgreSQL proxy.

Each is stopped by its finalizer however the test ends, so no process outlives its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from market.config import Settings
from tests.reliability.pgproxy import PostgresProxy
from tests.reliability.stack import Deployment, PrivateRedis


@pytest.fixture()
def sessions(app: Flask) -> sessionmaker[Session]:
    """Sessions on this run's database, straight to the server (never through a proxy)."""
    return app.extensions["spartan.sessions"]


@pytest.fixture()
def deploy(mp_sandbox: object) -> Iterator[Callable[..., Deployment]]:
    """Make a deployment (its own prefixes; `env` overrides, e.g. the broker); stopped after.

    Depends on `mp_sandbox` so the processes inherit the sandbox's address.
    """
    made: list[Deployment] = []

    def make(name: str, **env: str) -> Deployment:
        deployment = Deployment(name, **env)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture()
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.close()


@pytest.fixture()
def pg_proxy(settings: Settings) -> Iterator[PostgresProxy]:
    url = make_url(settings.database_url)
    proxy = PostgresProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    yield proxy
    proxy.close()
