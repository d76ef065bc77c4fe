"""Scopes: item types a named client may read, publisher tokens for HTTP posting, and the
types each running daemon serves.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: every type (what named clients could read before).
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("types", sa.Text, nullable=True))
    # A bearer token over HTTP names no client: it is looked up by its hash.
    op.create_index("ix_clients_token_hash", "clients", ["token_hash"])
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("types", sa.Text, nullable=True))
    op.create_table(
        "publishers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("types", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_used", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("publishers")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("types")
    op.drop_index("ix_clients_token_hash", "clients")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("types")
