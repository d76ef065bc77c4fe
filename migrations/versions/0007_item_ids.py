"""Item ids are never handed out twice (SQLite).

Without AUTOINCREMENT, SQLite gives a new row the highest id in the table plus one: after
`notifctl rm` of the newest item, or once retention emptied the table, a new item took an
id that running daemons, named clients' cursors and durable notifiers' marks had already
passed, and none of them would ever read it. PostgreSQL's sequences never hand out an id
twice: nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _rebuild_items(**table_kwargs) -> None:
    # The table is copied into a new one and the old one dropped; dropping it deletes the
    # deliveries that point at it (ON DELETE CASCADE), so they are kept aside and put back.
    op.execute("CREATE TEMP TABLE outbox_kept AS SELECT * FROM outbox")
    with op.batch_alter_table("items", recreate="always", table_kwargs=table_kwargs):
        pass
    op.execute("INSERT INTO outbox SELECT * FROM outbox_kept")
    op.execute("DROP TABLE outbox_kept")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's counter starts at the highest id copied.
        _rebuild_items(sqlite_autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_items()
