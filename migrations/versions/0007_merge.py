"""merge feature branches

Revision ID: 0007
Revises: 0003, 0004, 0005, 0006
Create Date: 2026-11-29 02:24:32.941490
"""

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | Sequence[str] | None = ("0003", "0004", "0005", "0006")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
