"""hot paths: a spend in one round trip (ledger_spend); indexes for keyset pages, the
/metrics gauges, the daily roll-up and the purges

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 23:05:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The whole spend in one statement: lock the wallet (created on first use), check the
# balance, post the transaction once per reference and its two legs. Every guard of 0003
# still runs on these rows: the entry trigger moves the wallet's balance (the CHECK keeps it
# >= 0), entries and transactions stay append-only, the deferred trigger checks at commit
# that the transaction sums to zero, and the reference stays unique.
#
# Returns one row: `outcome` is 'posted', 'replayed' (the reference was already posted:
# nothing applied again) or 'short' (balance below the amount: nothing written, and the
# caller's transaction stays usable, unlike a raised error). `balance` is the wallet's
# balance after the call.
LEDGER_SPEND = """
CREATE FUNCTION ledger_spend(
    p_user_id uuid, p_amount bigint, p_reference text, p_description text,
    p_consumed uuid, OUT outcome text, OUT transaction_id uuid, OUT user_delta bigint,
    OUT balance bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_wallet uuid;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'amount must be positive' USING ERRCODE = 'check_violation';
    END IF;
    SELECT a.id, a.balance INTO v_wallet, balance
    FROM ledger_accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        -- Two first uses at once: the second insert waits for the first, then does nothing.
        INSERT INTO ledger_accounts (id, code, kind, user_id)
        VALUES (gen_random_uuid(), 'user:' || p_user_id, 'user', p_user_id)
        ON CONFLICT (user_id) DO NOTHING;
        SELECT a.id, a.balance INTO STRICT v_wallet, balance
        FROM ledger_accounts a WHERE a.user_id = p_user_id FOR UPDATE;
    END IF;
    IF balance < p_amount THEN
        outcome := 'short';
        RETURN;
    END IF;
    INSERT INTO ledger_transactions (id, reference, kind, user_id, user_delta, description)
    VALUES (gen_random_uuid(), p_reference, 'spend', p_user_id, -p_amount, p_description)
    ON CONFLICT (reference) DO NOTHING
    RETURNING id INTO transaction_id;
    IF transaction_id IS NULL THEN
        -- A retry or a concurrent twin: the first post stands.
        SELECT t.id, t.user_delta INTO STRICT transaction_id, user_delta
        FROM ledger_transactions t WHERE t.reference = p_reference;
        outcome := 'replayed';
        RETURN;
    END IF;
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    VALUES (transaction_id, v_wallet, -p_amount), (transaction_id, p_consumed, p_amount);
    outcome := 'posted';
    user_delta := -p_amount;
    balance := balance - p_amount;
END $$
"""

# Keyset pages (newest first) read (user_id, created_at, id) in index order, however deep.
INDEXES = (
    ("ix_ledger_transactions_user_created_id", "ledger_transactions", "user_id, created_at, id"),
    ("ix_purchases_user_created_id", "purchases", "user_id, created_at, id"),
    # The payment lag gauge finds each payment's first event (it scanned the events).
    ("ix_payment_events_payment", "payment_events", "payment_id, received_at"),
    # ... over purchases approved in the last hour (it scanned purchases); and the daily
    # roll-up reads one day of each source by its timestamp (each scanned its whole table).
    ("ix_purchases_approved_at", "purchases", "approved_at"),
    ("ix_purchases_reversed_at", "purchases", "reversed_at"),
    ("ix_ledger_transactions_created", "ledger_transactions", "created_at"),
    ("ix_media_files_created", "media_files", "created_at"),
    ("ix_jobs_created", "jobs", "created_at"),
    # The purges walk their table oldest first by the timestamp their retention counts from.
    ("ix_jobs_finished", "jobs", "finished_at"),
    ("ix_purchases_status_settled", "purchases", "status, settled_at"),
    # ... whose "never moved money" test looks up the purchase's ledger transactions.
    ("ix_ledger_transactions_purchase", "ledger_transactions", "purchase_id"),
    # A deleted job or notification nulls the foreign keys pointing at it: without these,
    # each deleted row scanned the whole inbox or delivery log (26 s per batch of 500 jobs
    # at 1M inbox rows, found by bench/growth.py).
    ("ix_payment_events_job", "payment_events", "job_id"),
    ("ix_webhook_deliveries_notification", "webhook_deliveries", "notification_id"),
    ("ix_notifications_read", "notifications", "read_at"),
    ("ix_payment_events_processed", "payment_events", "processed_at"),
    ("ix_webhook_deliveries_updated", "webhook_deliveries", "updated_at"),
)
REPLACED = (
    ("ix_ledger_transactions_user_created", "ledger_transactions", "user_id, created_at"),
    ("ix_purchases_user_created", "purchases", "user_id, created_at"),
)


def upgrade() -> None:
    op.execute(LEDGER_SPEND)
    for name, table, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON {table} ({columns})")
    for name, _, _ in REPLACED:
        op.execute(f"DROP INDEX {name}")


def downgrade() -> None:
    for name, table, columns in REPLACED:
        op.execute(f"CREATE INDEX {name} ON {table} ({columns})")
    for name, _, _ in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute("DROP FUNCTION ledger_spend(uuid, bigint, text, text, uuid)")
