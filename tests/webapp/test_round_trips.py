"""The round trips of the hot paths, counted so they cannot creep back (issue 17).

Targets: a cached balance read is one Redis round trip (the rate limiter's hit and the
cache read in one pipeline, webapp/read_ahead.py) and no SQL; a spend is one round trip to
PostgreSQL (the `ledger_spend` function, prepared by psycopg, in autocommit: no BEGIN, no
COMMIT, no pre-ping) plus the limiter and the cache invalidation. Request metrics cost no
round trip on the request.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text

from market import ledger
from tests.support.round_trips import counting

BASE = "/api/v1/advanced/credits"


def fund(app, user_id, credits: int) -> None:
    with app.extensions["spartan.sessions"]() as session:
        ledger.credit_sale(session, user_id=user_id, credits=credits, reference=f"t:{uuid.uuid4()}")
        session.commit()


def test_a_cached_balance_read_is_one_redis_round_trip_and_no_sql(
    app, client, alice, user_id_of, monkeypatch
):
    fund(app, user_id_of(alice), 10)
    assert client.get(f"{BASE}/me", headers=alice).status_code == 200  # caches it
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        answer = client.get(f"{BASE}/me", headers=alice)
    assert answer.status_code == 200
    assert answer.get_json()["balance"] == 10
    # flask-limiter's headers are still there, from the hit's own answer.
    assert answer.headers["X-RateLimit-Remaining"].isdigit()
    assert int(answer.headers["RateLimit-Reset"]) >= 0
    assert seen.statements == [] and seen.postgres == []
    assert len(seen.redis) == 1, seen.redis  # the limiter's hit and the cache read, pipelined


def test_a_spend_is_one_statement_and_three_redis_round_trips(
    app, client, alice, user_id_of, monkeypatch
):
    fund(app, user_id_of(alice), 10)
    client.get(f"{BASE}/me", headers=alice)  # the process now knows the caller's id
    # Redis knows the invalidation's script (another test may have flushed them all).
    assert client.post(f"{BASE}/spend", json={"amount": 1}, headers=alice).status_code == 201
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        answer = client.post(f"{BASE}/spend", json={"amount": 3}, headers=alice)
    assert answer.status_code == 201
    assert answer.get_json()["balance"] == 6
    assert len(seen.statements) == 1 and "ledger_spend" in seen.statements[0], seen.statements
    assert len(seen.postgres) == 1, seen.postgres  # no BEGIN, COMMIT or ping around it
    # The default limit, the spend limit, the balance cache's invalidation.
    assert len(seen.redis) == 3, seen.redis


def test_a_short_spend_is_one_statement_and_changes_nothing(
    app, client, alice, user_id_of, monkeypatch
):
    fund(app, user_id_of(alice), 2)
    client.get(f"{BASE}/me", headers=alice)
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        answer = client.post(f"{BASE}/spend", json={"amount": 3}, headers=alice)
    assert answer.status_code == 409
    assert len(seen.statements) == 1 and len(seen.postgres) == 1, seen.postgres
    assert client.get(f"{BASE}/me", headers=alice).get_json()["balance"] == 2


def test_psycopg_prepares_the_spend_on_a_connection_that_repeats_it(app, user_id_of, alice):
    user_id = user_id_of(alice)
    fund(app, user_id, 100)
    engine = app.extensions["spartan.engine"]
    with engine.connect() as conn:
        from sqlalchemy.orm import Session

        with Session(bind=conn) as session:
            for _ in range(6):  # psycopg's prepare_threshold is 5
                ledger.spend(session, user_id=user_id, amount=1, description=None)
                session.commit()
            prepared = session.execute(
                text("SELECT statement FROM pg_prepared_statements")
            ).scalars()
            assert any("ledger_spend" in statement for statement in prepared)


def test_a_caller_the_process_does_not_know_yet_reads_in_two_round_trips(
    app, client, make_user, user_id_of, monkeypatch
):
    carol = make_user()
    fund(app, user_id_of(carol), 4)  # cached by nobody yet, and unknown to this process
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        answer = client.get(f"{BASE}/me", headers=carol)
    assert answer.status_code == 200 and answer.get_json()["balance"] == 4
    # The limiter's hit alone; the cache's read, its store (a miss) after the user's row.
    assert len(seen.redis) == 3, seen.redis
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        assert client.get(f"{BASE}/me", headers=carol).get_json()["balance"] == 4
    assert len(seen.redis) == 1 and seen.statements == []


def test_a_cached_read_answers_after_redis_forgot_the_scripts(
    app, client, alice, user_id_of, monkeypatch
):
    fund(app, user_id_of(alice), 6)
    assert client.get(f"{BASE}/me", headers=alice).get_json()["balance"] == 6
    before = int(client.get(f"{BASE}/me", headers=alice).headers["X-RateLimit-Remaining"])
    app.extensions["spartan.redis"].script_flush()  # as a Redis restart would
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        answer = client.get(f"{BASE}/me", headers=alice)
    assert answer.status_code == 200 and answer.get_json()["balance"] == 6
    # The hit was counted once: the pipeline's failed script did nothing, its retry counted.
    assert int(answer.headers["X-RateLimit-Remaining"]) == before - 1
    assert seen.statements == []
    with counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        assert client.get(f"{BASE}/me", headers=alice).status_code == 200
    assert len(seen.redis) == 1  # the scripts are loaded again: back to one round trip


def test_a_read_refused_by_its_limit_keeps_the_limiter_headers(
    app_with, alice, user_id_of, monkeypatch
):
    limited = app_with(rate_limit_default="2/minute")
    client = limited.test_client()
    fund(limited, user_id_of(alice), 3)
    assert [client.get(f"{BASE}/me", headers=alice).status_code for _ in range(2)] == [200, 200]
    with counting(limited.extensions["spartan.engine"], monkeypatch) as seen:
        refused = client.get(f"{BASE}/me", headers=alice)
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 0 <= int(refused.headers["Retry-After"]) <= 60
    assert len(seen.redis) == 1 and seen.statements == []
