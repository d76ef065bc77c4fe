"""Outbox and change ids are never handed out twice (SQLite).

Without AUTOINCREMENT, SQLite gives a new row the highest id in the table plus one: a
delivery id deleted once delivered came back for the next delivery (`notifctl outbox retry
ID` could then name another one), and a change id came back after the changes were pruned,
where running daemons, which follow changes by id, would never read it. PostgreSQL's
sequences never hand out an id twice: nothing to do there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("outbox", "changes")  # no foreign key points at them: copying them cascades nothing


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        # The table is copied into one declared AUTOINCREMENT; SQLite's counter starts at the highest id copied.
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always"):
            pass
