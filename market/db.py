"""Engines, sessions and row locks. Callers own transactions: `market` functions never commit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from select import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLPRI, poll
from typing import Any, TypeVar

from sqlalchemy import Executable, Row, Select, create_engine, event, exc, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

_HUNG_UP = POLLIN | POLLPRI | POLLERR | POLLHUP | POLLNVAL


def make_engine(
    database_url: str,
    *,
    pool_size: int = 5,
    application_name: str = "spartan",
) -> Engine:
    """An engine that survives a restarted PostgreSQL, with bounded connect time.

    A pooled connection is checked for a hang-up when it is checked out, without a round
    trip (`_drop_dead_connection`); SQLAlchemy's `pool_pre_ping` would send a `SELECT 1`
    (and psycopg a `BEGIN` before it) on every checkout.
    """
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )
    event.listen(engine, "checkout", _drop_dead_connection)
    return engine


def _drop_dead_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Refuse a pooled connection the server has hung up on; the pool then opens a new one.

    An idle connection has nothing to read: the server writes to it only to end it (a restart
    or `pg_terminate_backend` sends a FATAL error and closes; a cut gives end-of-file), so a
    readable or hung-up socket is a dead connection. One `poll()` with no wait, no round trip.
    A connection lost without a word (a cable pulled) fails its first statement instead, and
    SQLAlchemy then drops every pooled connection older than it, as pre-ping would have.
    """
    if dbapi_connection.closed:
        raise exc.DisconnectionError("the connection is closed")
    poller = poll()
    poller.register(dbapi_connection.fileno(), _HUNG_UP)
    if poller.poll(0):
        raise exc.DisconnectionError("the server hung up on the pooled connection")


def execute_idempotent(
    engine: Engine, statement: Executable, params: dict[str, Any] | None = None
) -> Row[Any] | None:
    """Run ONE statement that is safe to run twice, in autocommit (no BEGIN, no COMMIT round
    trips), and return its first row. A pooled connection that died without a word (the
    checkout's hang-up check sees only a server that ended it) raises a disconnect,
    SQLAlchemy discards it and the pool's older connections, and the statement goes once
    more on a fresh one. Whether the first try committed before its connection died is unknown; the
    statement must give the same answer either way."""
    for attempt in (1, 2):
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return conn.execute(statement, params).first()
        except DBAPIError as error:
            if attempt == 2 or not error.connection_invalidated:
                raise
    raise AssertionError("unreachable")


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


def autocommit(session: Session) -> Session:
    """`session` with each of its next statements its own transaction, until it commits.

    For work that is one statement (a spend): no `BEGIN` and no `COMMIT` go to the server, so
    the statement is the only round trip. Call it before the session's first statement of
    the transaction; `session.commit()` then sends nothing.
    """
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return session


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with factory() as session, session.begin():
        yield session


_Query = TypeVar("_Query", bound=Select[Any])
_Key = TypeVar("_Key")


def locked(stmt: _Query, lock: bool = True) -> _Query:
    """`stmt` FOR UPDATE (when `lock`), re-reading the rows it locks: what another
    transaction committed while this one waited for the lock replaces what the session held."""
    if not lock:
        return stmt
    return stmt.with_for_update().execution_options(populate_existing=True)


def lock_in_key_order(
    session: Session, key: InstrumentedAttribute[_Key], keys: Iterable[_Key]
) -> dict[_Key, Any]:
    """The rows whose `key` is one of `keys`, locked FOR UPDATE in key order, by key. One
    lock order: two transactions locking overlapping sets wait for each other, never deadlock."""
    rows = session.execute(
        select(key.class_).where(key.in_(sorted(set(keys)))).order_by(key).with_for_update()
    ).scalars()
    return {getattr(row, key.key): row for row in rows}
