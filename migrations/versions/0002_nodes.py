"""Running daemons and their heartbeat, for `notifctl status`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("listen", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("stopped_at", sa.DateTime, nullable=True),
        sa.Column("connections", sa.Integer, nullable=False),
        sa.Column("subscribers", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
