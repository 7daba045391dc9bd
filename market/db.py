"""Engines and sessions. Callers own transactions: `market` functions never commit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    database_url: str, *, pool_size: int = 5, application_name: str = "spartan"
) -> Engine:
    """An engine with pre-ping (survives a restarted PostgreSQL) and bounded connect time."""
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (handlers answer after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], None], *, once: bool = False) -> None:
    """Run `callback` once the session's current transaction commits; drop it on rollback.

    This is how tasks are sent only after the rows they will read are visible. With `once`,
    a callback already waiting for this commit is not added a second time.
    """
    callbacks = session.info.setdefault("after_commit", [])
    if not (once and callback in callbacks):
        callbacks.append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks = session.info.pop("after_commit", [])
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with factory() as session, session.begin():
        yield session


def database_name(database_url: str) -> str:
    """The database part of a URL."""
    return make_url(database_url).database or ""


def server_url(database_url: str, database: str = "postgres") -> str:
    """The same server, another database (for CREATE DATABASE)."""
    return make_url(database_url).set(database=database).render_as_string(hide_password=False)
