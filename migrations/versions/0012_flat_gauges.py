"""flat /metrics gauges: running totals of the system accounts and row counts of jobs and
webhook deliveries, kept in the writers' own statements; the recent signed payment events
by an index

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 01:40:00.000000

The gauges summed every ledger entry of the system accounts and grouped every job and
delivery row at each scrape: 0.97 s at 1M rows per table (bench/growth.py). Now the writes
keep the figures and a scrape reads a handful of rows.

No hot row: a trigger adds to the row of its own backend (`slot = pg_backend_pid()`), and a
backend runs one transaction at a time, so no two transactions ever wait on the same row
(concurrent spends would all queue on one `system:consumed` row otherwise). A reader sums
the slots, in one snapshot, so what it sees is exactly what committed. The slots of backends
come and go: `fold` (market/ledger `fold_totals`, market/ops/gauges `fold_counts`, run by the
hourly maintenance) moves every slot not in use (`SKIP LOCKED`) into slot 0.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    """
    CREATE TABLE ledger_account_totals (
        -- No foreign key: the entry that adds to it was checked against ledger_accounts.
        account_id uuid NOT NULL,
        slot integer NOT NULL,
        total bigint NOT NULL,
        PRIMARY KEY (account_id, slot)
    )
    """,
    """
    CREATE TABLE row_counts (
        tbl text NOT NULL,
        k1 text NOT NULL,
        k2 text NOT NULL,
        slot integer NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (tbl, k1, k2, slot)
    )
    """,
)

# Wallets as before (their balance, with the CHECK that keeps it >= 0); a system account's
# running total in this backend's slot.
APPLY_ENTRY = """
CREATE OR REPLACE FUNCTION ledger_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_accounts SET balance = balance + NEW.amount
    WHERE id = NEW.account_id AND kind = 'user';
    IF NOT FOUND THEN
        INSERT INTO ledger_account_totals AS t (account_id, slot, total)
        VALUES (NEW.account_id, pg_backend_pid(), NEW.amount)
        ON CONFLICT (account_id, slot) DO UPDATE SET total = t.total + EXCLUDED.total;
    END IF;
    RETURN NULL;
END $$
"""
APPLY_ENTRY_BEFORE = """
CREATE OR REPLACE FUNCTION ledger_apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_accounts SET balance = balance + NEW.amount
    WHERE id = NEW.account_id AND kind = 'user';
    RETURN NULL;
END $$
"""

# (table, first label column, second label column) of each counted table.
COUNTED = (("jobs", "kind", "state"), ("webhook_deliveries", "event_type", "state"))


def _count_triggers(table: str, k1: str, k2: str) -> list[str]:
    # The names formatted into this SQL are COUNTED's constants, never input (S608).
    upsert = (
        "INSERT INTO row_counts AS c (tbl, k1, k2, slot, n) {rows} "
        "ON CONFLICT (tbl, k1, k2, slot) DO UPDATE SET n = c.n + EXCLUDED.n"
    )
    grouped = (
        f"SELECT '{table}', {k1}, {k2}, pg_backend_pid(), {{sign}} count(*) "  # noqa: S608
        f"FROM {{rows}} GROUP BY {k1}, {k2}"
    )
    moved = (
        f"VALUES ('{table}', OLD.{k1}, OLD.{k2}, pg_backend_pid(), -1), "
        f"('{table}', NEW.{k1}, NEW.{k2}, pg_backend_pid(), 1)"
    )
    return [
        # Inserts and deletes by statement (a purge deletes 500 rows: one upsert per group).
        f"""CREATE FUNCTION {table}_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {upsert.format(rows=grouped.format(sign="", rows="inserted_rows"))};
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION {table}_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {upsert.format(rows=grouped.format(sign="-", rows="deleted_rows"))};
            RETURN NULL;
        END $$""",
        # A row that changes group: the WHEN is checked without calling the function, so
        # updates that keep the state (most of them) cost nothing.
        f"""CREATE FUNCTION {table}_count_moved() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {upsert.format(rows=moved)};
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION {table}_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM row_counts WHERE tbl = '{table}';
            RETURN NULL;
        END $$""",  # noqa: S608
        f"""CREATE TRIGGER {table}_count_inserted AFTER INSERT ON {table}
        REFERENCING NEW TABLE AS inserted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {table}_count_inserted()""",
        f"""CREATE TRIGGER {table}_count_deleted AFTER DELETE ON {table}
        REFERENCING OLD TABLE AS deleted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {table}_count_deleted()""",
        f"""CREATE TRIGGER {table}_count_moved AFTER UPDATE OF {k1}, {k2} ON {table}
        FOR EACH ROW WHEN (OLD.{k1} IS DISTINCT FROM NEW.{k1} OR OLD.{k2} IS DISTINCT FROM NEW.{k2})
        EXECUTE FUNCTION {table}_count_moved()""",
        f"""CREATE TRIGGER {table}_count_truncated AFTER TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION {table}_count_truncated()""",
        # What is there already, in slot 0.
        f"""INSERT INTO row_counts (tbl, k1, k2, slot, n)
        SELECT '{table}', {k1}, {k2}, 0, count(*) FROM {table} GROUP BY {k1}, {k2}""",  # noqa: S608
    ]


# The lateness gauge reads the payment events of the last hour that carry a signature time:
# without this it walked the whole (payment_id, received_at) index (83 ms at 1M events).
RECEIVED = (
    "CREATE INDEX ix_payment_events_received_signed ON payment_events (received_at) "
    "WHERE signed_at IS NOT NULL"
)


def upgrade() -> None:
    # No posting, job or delivery may commit between the backfill's snapshot and the
    # triggers: writers wait for the migration (it takes as long as one count of each).
    op.execute("LOCK TABLE ledger_entries, jobs, webhook_deliveries IN SHARE ROW EXCLUSIVE MODE")
    for stmt in TABLES:
        op.execute(stmt)
    op.execute(APPLY_ENTRY)
    op.execute(
        """INSERT INTO ledger_account_totals (account_id, slot, total)
        SELECT a.id, 0, COALESCE(sum(e.amount), 0)
        FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
        WHERE a.kind = 'system' GROUP BY a.id"""
    )
    for table, k1, k2 in COUNTED:
        for stmt in _count_triggers(table, k1, k2):
            op.execute(stmt)
    op.execute(RECEIVED)


def downgrade() -> None:
    op.execute("DROP INDEX ix_payment_events_received_signed")
    for table, _, _ in COUNTED:
        for what in ("inserted", "deleted", "moved", "truncated"):
            op.execute(f"DROP TRIGGER {table}_count_{what} ON {table}")
            op.execute(f"DROP FUNCTION {table}_count_{what}()")
    op.execute(APPLY_ENTRY_BEFORE)
    op.execute("DROP TABLE row_counts")
    op.execute("DROP TABLE ledger_account_totals")
