"""Pooled connections: a connection the server hung up on is replaced at checkout, with no
round trip for the check (no pre-ping)."""

from __future__ import annotations

from sqlalchemy import text

from market.db import make_engine
from tests.support.poll import wait_for
from tests.support.round_trips import counting


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_the_server_ended_is_replaced_at_checkout(database, settings):
    engine = make_engine(settings.database_url, pool_size=1, application_name="spartan-db-test")
    other = make_engine(settings.database_url, pool_size=1)
    try:
        pid = _backend_pid(engine)  # now idle in the pool
        # As a restart or an operator would end it; autocommit: each look is a fresh snapshot.
        with other.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            wait_for(
                lambda: (
                    not conn.execute(
                        text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                    ).scalar_one()
                ),
                what="the backend gone",
            )
        assert _backend_pid(engine) != pid  # no error: a fresh connection answered
    finally:
        engine.dispose()
        other.dispose()


def test_a_checkout_sends_nothing_before_the_first_statement(database, settings, monkeypatch):
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        _backend_pid(engine)
        with counting(engine, monkeypatch) as seen, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            conn.commit()
        assert len(seen.postgres) == 3, seen.postgres  # BEGIN, the statement, COMMIT: no ping
    finally:
        engine.dispose()
