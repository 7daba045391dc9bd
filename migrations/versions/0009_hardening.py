"""hardening: admin proof expiry and revocation; safe job errors with details kept apart

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What users are shown of a job that failed before error codes existed: its recorded text
# may hold internal details (provider addresses, exception reprs), so it moves to the detail.
LEGACY_MESSAGE = "The job failed."


def _errors_of(table: str) -> sa.TableClause:
    return sa.table(
        table,
        sa.column("error", sa.Text),
        sa.column("error_code", sa.String),
        sa.column("error_detail", sa.Text),
    )


def upgrade() -> None:
    op.add_column("users", sa.Column("admin_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("admin_granted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("admin_revoked_at", sa.DateTime(timezone=True), nullable=True))
    for table in ("jobs", "job_steps"):
        op.add_column(table, sa.Column("error_code", sa.String(length=64), nullable=True))
        op.add_column(table, sa.Column("error_detail", sa.Text(), nullable=True))
        rows = _errors_of(table)
        op.execute(
            rows.update()
            .where(rows.c.error.is_not(None))
            .values(error_detail=rows.c.error, error_code="failed", error=LEGACY_MESSAGE)
        )
    # Admins proven before this migration: their proof lasts as long as a Firebase ID token.
    op.execute(
        "UPDATE users SET admin_until = COALESCE(last_seen_at, now()) + interval '1 hour' "
        "WHERE is_admin"
    )


def downgrade() -> None:
    for table in ("jobs", "job_steps"):
        rows = _errors_of(table)
        op.execute(
            rows.update()
            .where(rows.c.error.is_not(None))
            .values(error=sa.func.coalesce(rows.c.error_detail, rows.c.error))
        )
        op.drop_column(table, "error_detail")
        op.drop_column(table, "error_code")
    op.drop_column("users", "admin_revoked_at")
    op.drop_column("users", "admin_granted_at")
    op.drop_column("users", "admin_until")
