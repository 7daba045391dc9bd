"""media files (avatar uploads) and the avatar columns of profiles

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-29 00:41:06.536923
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Orders every avatar choice (uploads and presets) across users; see market/models/media.py.
    op.execute(sa.schema.CreateSequence(sa.Sequence("avatar_seq")))
    op.create_table(
        "media_files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="staged", nullable=False),
        sa.Column(
            "seq", sa.BigInteger(), server_default=sa.text("nextval('avatar_seq')"), nullable=False
        ),
        sa.Column("original_key", sa.String(length=300), nullable=False),
        sa.Column("original_format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column(
            "output_keys",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('staged', 'processed', 'active', 'replaced', 'failed')",
            name=op.f("ck_media_files_state"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_media_files_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_files")),
        sa.UniqueConstraint("seq", name=op.f("uq_media_files_seq")),
        sa.UniqueConstraint("token", name=op.f("uq_media_files_token")),
    )
    op.create_index(
        "ix_media_files_pending",
        "media_files",
        ["created_at"],
        unique=False,
        postgresql_where="state IN ('staged', 'processed')",
    )
    op.create_index(
        "ix_media_files_user_created", "media_files", ["user_id", "created_at"], unique=False
    )
    op.add_column("profiles", sa.Column("avatar_media_id", sa.Uuid(), nullable=True))
    op.add_column("profiles", sa.Column("avatar_preset", sa.String(length=32), nullable=True))
    op.add_column("profiles", sa.Column("avatar_seq", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_profiles_avatar_media_id_media_files"),
        "profiles",
        "media_files",
        ["avatar_media_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_profiles_avatar_media_id_media_files"), "profiles", type_="foreignkey"
    )
    op.drop_column("profiles", "avatar_seq")
    op.drop_column("profiles", "avatar_preset")
    op.drop_column("profiles", "avatar_media_id")
    op.drop_index("ix_media_files_user_created", table_name="media_files")
    op.drop_index(
        "ix_media_files_pending",
        table_name="media_files",
        postgresql_where="state IN ('staged', 'processed')",
    )
    op.drop_table("media_files")
    op.execute(sa.schema.DropSequence(sa.Sequence("avatar_seq")))
