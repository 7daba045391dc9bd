"""The /metrics domain gauges read figures kept on write (migration 0012), never the growing
tables: jobs and deliveries by label from row_counts, the system accounts from their running
totals. Each test compares them with the count or the sum over the table itself, in one
snapshot, after inserts, state changes, deletes, concurrent writers and folds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from market import ledger
from market.models import (
    Job,
    LedgerAccount,
    LedgerEntry,
    WebhookDelivery,
    WebhookEndpoint,
)
from market.ops import gauges
from tests.support.round_trips import counting

GROWING = ("jobs", "ledger_entries", "webhook_deliveries")


@pytest.fixture()
def sessions(app):
    return app.extensions["spartan.sessions"]


@contextmanager
def snapshot(sessions) -> Iterator[Session]:
    """One REPEATABLE READ transaction: the gauge and the truth read the same snapshot, even
    if a worker of the run writes meanwhile."""
    with sessions() as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session
        session.rollback()


def truth(session: Session, table: str) -> list[tuple[str, str, int]]:
    model, k1 = {"jobs": (Job, Job.kind), "webhook_deliveries": (WebhookDelivery, None)}[table]
    k1 = k1 if k1 is not None else WebhookDelivery.event_type
    rows = session.execute(
        select(k1, model.state, func.count()).group_by(k1, model.state).order_by(k1, model.state)
    ).all()
    return [tuple(r) for r in rows]


def entry_sums(session: Session) -> dict[str, int]:
    sums = dict.fromkeys(ledger.SYSTEM_ACCOUNTS, 0)
    rows = session.execute(
        select(LedgerAccount.code, func.sum(LedgerEntry.amount))
        .join(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
        .where(LedgerAccount.kind == "system")
        .group_by(LedgerAccount.code)
    ).all()
    sums.update({code: int(total) for code, total in rows})
    wallets = session.execute(
        select(func.coalesce(func.sum(LedgerAccount.balance), 0)).where(
            LedgerAccount.kind == "user"
        )
    ).scalar_one()
    return {**sums, "wallets": int(wallets)}


def assert_counts_true(sessions) -> None:
    with snapshot(sessions) as session:
        for table in gauges.COUNTED:
            assert gauges.counts(session, table) == truth(session, table), table


def assert_ledger_true(sessions) -> None:
    with snapshot(sessions) as session:
        kept = ledger.system_balances(session)
        assert kept == entry_sums(session)
        assert sum(kept.values()) == 0  # double entry: wallets and system accounts cancel


def slots(sessions, table: str) -> int:
    with sessions() as session:
        return session.execute(text(f"SELECT count(*) FROM {table} WHERE slot <> 0")).scalar_one()


def test_job_counts_follow_inserts_state_changes_and_deletes(sessions):
    kind = f"test.gauge.{uuid.uuid4().hex[:8]}"
    with sessions() as session:
        jobs = [Job(kind=kind) for _ in range(5)]
        session.add_all(jobs)
        session.commit()
        ids = [j.id for j in jobs]
    assert_counts_true(sessions)
    with sessions() as session:
        session.execute(update(Job).where(Job.id.in_(ids[:3])).values(state="running"))
        session.execute(update(Job).where(Job.id == ids[0]).values(state="succeeded"))
        # An update that keeps the state moves no count.
        session.execute(update(Job).where(Job.id == ids[1]).values(subject="touched"))
        session.commit()
    with snapshot(sessions) as session:
        mine = [row for row in gauges.counts(session, "jobs") if row[0] == kind]
    assert mine == [(kind, "queued", 2), (kind, "running", 2), (kind, "succeeded", 1)]
    assert_counts_true(sessions)
    with sessions() as session:  # a purge deletes a batch in one statement
        session.execute(delete(Job).where(Job.id.in_(ids[:4])))
        session.commit()
    with snapshot(sessions) as session:
        mine = [row for row in gauges.counts(session, "jobs") if row[0] == kind]
    assert mine == [(kind, "queued", 1)]
    assert_counts_true(sessions)


def test_delivery_counts_follow_fan_out_sending_and_purge(sessions, user_id_of, alice):
    event = f"test.gauge.{uuid.uuid4().hex[:8]}"
    with sessions() as session:
        endpoint = WebhookEndpoint(
            owner_id=user_id_of(alice), url="https://example.com/h", events=["*"], secret="s"
        )
        session.add(endpoint)
        session.flush()
        deliveries = [
            WebhookDelivery(endpoint_id=endpoint.id, event_type=event, payload="{}")
            for _ in range(4)
        ]
        session.add_all(deliveries)
        session.commit()
        ids = [d.id for d in deliveries]
    with sessions() as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id.in_(ids[:2])).values(state="failed")
        )
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == ids[2]).values(state="succeeded")
        )
        session.commit()
    with snapshot(sessions) as session:
        mine = [r for r in gauges.counts(session, "webhook_deliveries") if r[0] == event]
    assert mine == [(event, "failed", 2), (event, "pending", 1), (event, "succeeded", 1)]
    assert_counts_true(sessions)
    with sessions() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id))
        session.commit()  # its deliveries go with it (ON DELETE CASCADE)
    with snapshot(sessions) as session:
        assert not [r for r in gauges.counts(session, "webhook_deliveries") if r[0] == event]
    assert_counts_true(sessions)


def post_sales(sessions, user_id: uuid.UUID, credits: list[int]) -> None:
    with sessions() as session:
        for n in credits:
            ledger.credit_sale(session, user_id=user_id, credits=n, reference=f"g:{uuid.uuid4()}")
        session.commit()


def test_system_balances_are_the_sums_of_their_entries_across_backends(
    sessions, user_id_of, alice, bob
):
    user_id = user_id_of(alice)
    # Two connections, so two backends, both inside a posting at once: two slots of
    # system:sales (two wallets: one wallet's lock would make the second wait).
    with sessions() as first, sessions() as second:
        ledger.credit_sale(first, user_id=user_id, credits=7, reference=f"g:{uuid.uuid4()}")
        ledger.credit_sale(
            second, user_id=user_id_of(bob), credits=5, reference=f"g:{uuid.uuid4()}"
        )
        pids = {s.execute(text("SELECT pg_backend_pid()")).scalar_one() for s in (first, second)}
        first.commit()
        second.commit()
    assert len(pids) == 2
    with sessions() as session:
        ledger.spend(session, user_id=user_id, amount=4, description=None)
        session.commit()
    assert_ledger_true(sessions)
    with sessions() as session:
        report = ledger.check_parity(session)
    assert report["drift"] == 0, report


def test_a_fold_keeps_every_balance_and_skips_a_slot_in_use(sessions, user_id_of, alice, bob):
    post_sales(sessions, user_id_of(alice), [3, 4])
    kind = f"test.gauge.{uuid.uuid4().hex[:8]}"
    with sessions() as busy:
        # A posting and a job not committed yet: their slots are locked by this transaction.
        ledger.credit_sale(busy, user_id=user_id_of(bob), credits=9, reference=f"g:{uuid.uuid4()}")
        busy.add(Job(kind=kind))
        busy.flush()
        busy_pid = busy.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with sessions() as folder:
            # The fold never waits for a writer: a lock wait here would fail the statement.
            folder.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert ledger.fold_totals(folder) >= 1
            assert gauges.fold_counts(folder) >= 0
            folder.commit()
        assert_ledger_true(sessions)  # the fold changed no balance
        assert_counts_true(sessions)
        with sessions() as session:
            left = session.execute(
                text("SELECT DISTINCT slot FROM ledger_account_totals WHERE slot <> 0")
            ).scalars()
            assert set(left) == {busy_pid}  # only the busy backend's slot is left
        busy.commit()
    assert_ledger_true(sessions)
    assert_counts_true(sessions)
    with sessions() as folder:
        ledger.fold_totals(folder)
        gauges.fold_counts(folder)
        folder.commit()
    assert slots(sessions, "ledger_account_totals") == 0
    assert slots(sessions, "row_counts") == 0
    assert_ledger_true(sessions)
    assert_counts_true(sessions)


def test_a_fold_drops_groups_left_empty(sessions):
    kind = f"test.gauge.{uuid.uuid4().hex[:8]}"
    with sessions() as session:
        job = Job(kind=kind)
        session.add(job)
        session.commit()
        session.execute(delete(Job).where(Job.id == job.id))
        session.commit()
    with sessions() as folder:
        gauges.fold_counts(folder)
        folder.commit()
        left = folder.execute(
            text("SELECT count(*) FROM row_counts WHERE k1 = :k"), {"k": kind}
        ).scalar_one()
    assert left == 0
    assert_counts_true(sessions)


def test_the_gauges_read_none_of_the_growing_tables(app, sessions, monkeypatch):
    """What a scrape sends touches row_counts, the running totals and the recent or
    unprocessed rows of the other tables, never jobs, ledger_entries or deliveries."""
    with sessions() as session, counting(app.extensions["spartan.engine"], monkeypatch) as seen:
        gauges.operations_gauges(session)
    assert seen.statements
    for statement in seen.statements:
        for table in GROWING:
            assert f"FROM {table}" not in statement and f"JOIN {table}" not in statement, (
                table,
                statement,
            )
