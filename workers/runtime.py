"""Per-process resources of a worker: settings, database sessions, Redis (rebuilt after fork)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis
from sqlalchemy.orm import Session, sessionmaker

from market.cache import Cache
from market.config import Settings, load_settings
from market.db import make_engine, make_sessionmaker

_pools: dict[int, sessionmaker[Session]] = {}


@cache
def settings() -> Settings:
    return load_settings()


def session_factory() -> sessionmaker[Session]:
    """This process's sessionmaker: a forked child builds its own pool, never the parent's."""
    pid = os.getpid()
    factory = _pools.get(pid)
    if factory is None:
        _pools.clear()
        factory = _pools[pid] = make_sessionmaker(
            make_engine(settings().database_url, pool_size=2, application_name="spartan-worker")
        )
    return factory


@contextmanager
def transaction() -> Iterator[Session]:
    """A session committed on success, rolled back on error."""
    with session_factory()() as session, session.begin():
        yield session


@contextmanager
def autocommit_session() -> Iterator[Session]:
    """A session outside any transaction, for a read before a provider call: each statement
    is one round trip, with no BEGIN or COMMIT (it must not write)."""
    engine = session_factory().kw["bind"]
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    with connection, Session(bind=connection) as session:
        yield session


_redis: dict[int, redis.Redis] = {}


def redis_client() -> redis.Redis:
    pid = os.getpid()
    client = _redis.get(pid)
    if client is None:
        _redis.clear()
        client = _redis[pid] = redis.Redis.from_url(
            settings().redis_url, socket_timeout=2, socket_connect_timeout=2
        )
    return client


def cache() -> Cache:
    return Cache(redis_client(), settings().key_prefix)
