"""Items, named clients, their read cursors, and who is connected.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("key", sa.String(200), nullable=True, unique=True),
    )
    op.create_index("ix_items_type_id", "items", ["type", "id"])
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=True),
    )
    op.create_table(
        "cursors",
        sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("last_read_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "presence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("since", sa.DateTime, nullable=False),
    )
    op.create_index("ix_presence_client", "presence", ["client_id"])


def downgrade() -> None:
    op.drop_table("presence")
    op.drop_table("cursors")
    op.drop_table("clients")
    op.drop_index("ix_items_type_id", "items")
    op.drop_table("items")
