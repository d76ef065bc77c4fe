"""The outbox of durable notifiers and their marks over the items.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("notifier", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_outbox_due", "outbox", ["notifier", "state", "next_attempt_at"])
    op.create_index("ux_outbox_item_notifier", "outbox", ["item_id", "notifier"], unique=True)
    # No mark rows: a durable notifier's mark is created at the newest item when it first
    # runs, so existing databases do not replay their history to it.
    op.create_table(
        "outbox_marks",
        sa.Column("notifier", sa.String(64), primary_key=True),
        sa.Column("last_item_id", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_marks")
    op.drop_index("ux_outbox_item_notifier", "outbox")
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
