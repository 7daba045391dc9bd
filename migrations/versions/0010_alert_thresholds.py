"""alert thresholds set at run time (audited), last fired/recovered times, recent attempts

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 23:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "alert_states", sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "alert_states", sa.Column("last_recovered_at", sa.DateTime(timezone=True), nullable=True)
    )
    # A rule breached before this migration has fired at least since its breach started.
    op.execute("UPDATE alert_states SET last_fired_at = breach_started_at")
    op.create_table(
        "alert_thresholds",
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["users.id"],
            name=op.f("fk_alert_thresholds_updated_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("rule", name=op.f("pk_alert_thresholds")),
    )
    op.create_table(
        "alert_threshold_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("old_threshold", sa.Float(), nullable=True),
        sa.Column("new_threshold", sa.Float(), nullable=True),
        sa.Column("changed_by", sa.Uuid(), nullable=True),
        sa.Column("changed_by_uid", sa.String(length=128), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["changed_by"],
            ["users.id"],
            name=op.f("fk_alert_threshold_changes_changed_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_threshold_changes")),
    )
    op.create_index(
        op.f("ix_alert_threshold_changes_rule"), "alert_threshold_changes", ["rule"], unique=False
    )
    # /metrics counts the delivery attempts of the last minutes at every scrape.
    op.create_index(
        "ix_webhook_delivery_attempts_attempted_at",
        "webhook_delivery_attempts",
        ["attempted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_delivery_attempts_attempted_at", table_name="webhook_delivery_attempts"
    )
    op.drop_index(op.f("ix_alert_threshold_changes_rule"), table_name="alert_threshold_changes")
    op.drop_table("alert_threshold_changes")
    op.drop_table("alert_thresholds")
    op.drop_column("alert_states", "last_recovered_at")
    op.drop_column("alert_states", "last_fired_at")
