"""payments: the inbox becomes `payment_events`, purchases get a timeline, partial refunds
and refunds in process, and the reconciliation cursor

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 23:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_PURCHASE_STATES = (
    "pending",
    "approved",
    "rejected",
    "cancelled",
    "expired",
    "refunded",
    "charged_back",
)
PURCHASE_STATES = (*OLD_PURCHASE_STATES, "partially_refunded")
OLD_REFUND_STATES = ("requested", "succeeded", "failed")
REFUND_STATES = ("requested", "in_process", "succeeded", "failed")

RENAMES = (
    ("pk_mercadopago_notifications", "pk_payment_events"),
    ("uq_mercadopago_notifications_dedupe_key", "uq_payment_events_dedupe_key"),
    ("fk_mercadopago_notifications_job_id_jobs", "fk_payment_events_job_id_jobs"),
)


def upgrade() -> None:
    # "Notification" meant both MercadoPago's events and the user's inbox: the events rename.
    op.rename_table("mercadopago_notifications", "payment_events")
    for old, new in RENAMES:
        op.execute(f"ALTER TABLE payment_events RENAME CONSTRAINT {old} TO {new}")
    op.execute(
        "ALTER INDEX ix_mercadopago_notifications_unprocessed "
        "RENAME TO ix_payment_events_unprocessed"
    )
    op.add_column("payment_events", sa.Column("payment_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "payment_events", sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(
        "UPDATE payment_events SET payment_id = data_id::bigint "
        "WHERE type = 'payment' AND data_id ~ '^[0-9]{1,18}$'"
    )

    op.add_column(
        "mercadopago_payments",
        sa.Column("applied_updated", sa.DateTime(timezone=True), nullable=True),
    )
    op.alter_column("purchases", "status", type_=sa.String(length=32))
    op.drop_constraint(op.f("ck_purchases_status"), "purchases", type_="check")
    op.create_check_constraint(
        op.f("ck_purchases_status"), "purchases", f"status IN {PURCHASE_STATES!r}"
    )
    op.add_column(
        "purchases",
        sa.Column("refunded_credits", sa.Integer(), server_default="0", nullable=False),
    )
    op.drop_constraint(op.f("ck_payment_refunds_status"), "payment_refunds", type_="check")
    op.create_check_constraint(
        op.f("ck_payment_refunds_status"), "payment_refunds", f"status IN {REFUND_STATES!r}"
    )

    op.create_table(
        "purchase_transitions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("purchase_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["purchase_id"],
            ["purchases.id"],
            name=op.f("fk_purchase_transitions_purchase_id_purchases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_transitions")),
    )
    op.create_index(
        "ix_purchase_transitions_purchase", "purchase_transitions", ["purchase_id", "id"]
    )
    # Purchases made before the timeline existed start it with their current state.
    op.execute(
        "INSERT INTO purchase_transitions (purchase_id, from_status, to_status, reason, "
        "payment_id, created_at) SELECT id, NULL, status, 'before_timeline', payment_id, "
        "updated_at FROM purchases"
    )
    op.create_table(
        "sync_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_cursors")),
    )


def downgrade() -> None:
    op.drop_table("sync_cursors")
    op.drop_index("ix_purchase_transitions_purchase", table_name="purchase_transitions")
    op.drop_table("purchase_transitions")
    op.drop_constraint(op.f("ck_payment_refunds_status"), "payment_refunds", type_="check")
    op.execute("UPDATE payment_refunds SET status = 'requested' WHERE status = 'in_process'")
    op.create_check_constraint(
        op.f("ck_payment_refunds_status"), "payment_refunds", f"status IN {OLD_REFUND_STATES!r}"
    )
    op.drop_column("purchases", "refunded_credits")
    op.drop_constraint(op.f("ck_purchases_status"), "purchases", type_="check")
    op.execute("UPDATE purchases SET status = 'approved' WHERE status = 'partially_refunded'")
    op.create_check_constraint(
        op.f("ck_purchases_status"), "purchases", f"status IN {OLD_PURCHASE_STATES!r}"
    )
    op.alter_column("purchases", "status", type_=sa.String(length=16))
    op.drop_column("mercadopago_payments", "applied_updated")
    op.drop_column("payment_events", "signed_at")
    op.drop_column("payment_events", "payment_id")
    op.execute(
        "ALTER INDEX ix_payment_events_unprocessed "
        "RENAME TO ix_mercadopago_notifications_unprocessed"
    )
    for old, new in RENAMES:
        op.execute(f"ALTER TABLE payment_events RENAME CONSTRAINT {new} TO {old}")
    op.rename_table("payment_events", "mercadopago_notifications")
