"""Fixtures of the fault tests: deployments of their own, a private Redis, a PostgreSQL proxy.

A deployment has a database and a MercadoPago sandbox of its own, so its beat sweeps only
what its test made: the suite's leftovers (thousands of pending purchases, payments never
notified) would otherwise become its work, and under a fault that work crowds out the test's.
Each is stopped by its finalizer however the test ends, so no process outlives its test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from market import manage
from market.config import Settings
from market.db import make_engine, make_sessionmaker
from sandbox.mercadopago import create_app, serve_in_thread
from tests.reliability.pgproxy import PostgresProxy
from tests.reliability.stack import Deployment, PrivateRedis
from tests.support.mercadopago import MercadoPagoSandbox


@pytest.fixture()
def sessions(app: Flask) -> sessionmaker[Session]:
    """Sessions on this run's database, straight to the server (never through a proxy)."""
    return app.extensions["spartan.sessions"]


@dataclass(frozen=True)
class FaultDatabase:
    """A database of one fault test: its URL and sessions straight to the server."""

    url: str
    sessions: sessionmaker[Session]


def _database_url(settings: Settings, suffix: str) -> str:
    url = make_url(settings.database_url)
    return url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def fault_template(database: str, settings: Settings) -> Iterator[str]:
    """A migrated database nobody connects to, which each fault test's database copies."""
    url = _database_url(settings, "fault_template")
    manage.drop_database(url)
    manage.create_database(url)
    manage.migrate(url)
    yield url
    manage.drop_database(url)


@pytest.fixture()
def fault_db(fault_template: str, settings: Settings) -> Iterator[FaultDatabase]:
    """A fresh copy of the migrated template for one test's deployment."""
    url = _database_url(settings, f"fault_{uuid.uuid4().hex[:8]}")
    manage.create_database(url, template=make_url(fault_template).database)
    engine = make_engine(url)
    try:
        yield FaultDatabase(url, make_sessionmaker(engine))
    finally:
        engine.dispose()
        manage.drop_database(url)


@pytest.fixture()
def fault_sandbox(settings: Settings) -> Iterator[MercadoPagoSandbox]:
    """A MercadoPago sandbox of one test's deployment (webhooks go where each preference says)."""
    app = create_app(
        access_token=settings.mercadopago_access_token,
        webhook_secret=settings.mercadopago_webhook_secret,
        webhook_retry_delays=(0.5, 1.0, 2.0),
    )
    server, url = serve_in_thread(app)
    yield MercadoPagoSandbox(url, app_url="", app=app)
    server.shutdown()


@pytest.fixture()
def deploy(
    fault_db: FaultDatabase, fault_sandbox: MercadoPagoSandbox
) -> Iterator[Callable[..., Deployment]]:
    """Make a deployment (its own prefixes, on `fault_db` and `fault_sandbox`; `env`
    overrides, e.g. the broker); stopped after, before its database is dropped."""
    made: list[Deployment] = []

    def make(name: str, **env: str) -> Deployment:
        env = {
            "DATABASE_URL": fault_db.url,
            "MERCADOPAGO_API_BASE_URL": fault_sandbox.url,
            **env,
        }
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
