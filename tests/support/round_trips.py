"""Counting round trips: SQL statements (SQLAlchemy events), what psycopg itself sends
(`postgres`: the statements plus what SQLAlchemy's events do not show, i.e. the pool's
pre-ping and the BEGIN/COMMIT/ROLLBACK psycopg sends on its own) and Redis commands sent
(every packed send of redis-py's connections, so a pipeline or a script counts once; kombu's
Redis transport goes through them, so a broker publish on Redis shows here)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from redis.connection import AbstractConnection
from sqlalchemy import event
from sqlalchemy.engine import Engine


@dataclass
class RoundTrips:
    statements: list[str] = field(default_factory=list)
    redis: list[str] = field(default_factory=list)
    postgres: list[str] = field(default_factory=list)


@contextmanager
def counting(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    """Count what this thread sends (the metrics flusher thread is left out on purpose: its
    sends are the background work that replaced a round trip per request)."""
    seen = RoundTrips()
    me = threading.get_ident()

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me:
            seen.statements.append(statement)

    original = AbstractConnection.send_packed_command

    def send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        if threading.get_ident() == me:
            first = command[0] if isinstance(command, list) else command
            seen.redis.append(bytes(first)[:60].decode(errors="replace"))
        return original(self, command, check_health)

    def sent(what: Any) -> None:
        if threading.get_ident() == me:
            text = what.decode() if isinstance(what, bytes) else str(what)
            seen.postgres.append(text[:60])

    # psycopg's own sends: each query a cursor executes, and each command the connection
    # sends by itself (BEGIN before a statement outside a transaction, COMMIT, ROLLBACK).
    execute, command = psycopg.Cursor.execute, psycopg.Connection._exec_command

    def on_execute(self: psycopg.Cursor, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent(query)
        return execute(self, query, *args, **kwargs)

    def on_command(self: psycopg.Connection, what: Any, *args: Any, **kwargs: Any) -> Any:
        sent(what)
        return command(self, what, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", on_execute)
    monkeypatch.setattr(psycopg.Connection, "_exec_command", on_command)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", send)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        monkeypatch.setattr(AbstractConnection, "send_packed_command", original)
        monkeypatch.setattr(psycopg.Cursor, "execute", execute)
        monkeypatch.setattr(psycopg.Connection, "_exec_command", command)


@dataclass
class TaskTrips:
    """What each task (by id) sent to the database while a real worker ran it."""

    statements: dict[str, list[str]] = field(default_factory=dict)
    commits: dict[str, int] = field(default_factory=dict)
    # Commits of transactions that wrote (INSERT, UPDATE, DELETE), per task.
    writing_commits: dict[str, int] = field(default_factory=dict)
    # Tasks that have run to their end (Celery's postrun signal).
    finished: set[str] = field(default_factory=set)


WRITES = ("INSERT", "UPDATE", "DELETE")


@contextmanager
def per_task(engine: Engine) -> Iterator[TaskTrips]:
    """Count the statements and commits of every task the in-process worker (threads pool)
    runs meanwhile, each attributed to the task its thread is running (Celery's prerun and
    postrun signals fire in that thread)."""
    from celery.signals import task_postrun, task_prerun

    seen = TaskTrips()
    running: dict[int, str] = {}
    wrote: dict[int, bool] = {}

    def prerun(task_id: str, **kw: Any) -> None:
        running[threading.get_ident()] = task_id

    def postrun(task_id: str, **kw: Any) -> None:
        running.pop(threading.get_ident(), None)
        seen.finished.add(task_id)

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        me = threading.get_ident()
        if (task_id := running.get(me)) is not None:
            seen.statements.setdefault(task_id, []).append(statement)
            if statement.lstrip().upper().startswith(WRITES):
                wrote[me] = True

    def on_commit(conn: Any) -> None:
        me = threading.get_ident()
        if (task_id := running.get(me)) is not None:
            seen.commits[task_id] = seen.commits.get(task_id, 0) + 1
            if wrote.pop(me, False):
                seen.writing_commits[task_id] = seen.writing_commits.get(task_id, 0) + 1

    task_prerun.connect(prerun, weak=False)
    task_postrun.connect(postrun, weak=False)
    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "before_cursor_execute", on_statement)
        task_postrun.disconnect(postrun)
        task_prerun.disconnect(prerun)
