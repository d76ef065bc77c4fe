"""Client and publisher ids are never handed out twice (SQLite).

Without AUTOINCREMENT, SQLite gives a new row the highest id in the table plus one: after
`notifctl client remove` of the newest client, the next client added took its id, and what
was still on its way for the removed one (read marks written in groups, a session on another
node not yet closed by the revocation) landed on the new client's cursors. Publisher ids
get the same guarantee. PostgreSQL's sequences never hand out an id twice: nothing to do
there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REFERRING = ("cursors", "presence")  # rows that point at clients (ON DELETE CASCADE)


def _rebuild(**table_kwargs) -> None:
    # Each table is copied into a new one and the old one dropped; dropping `clients` deletes
    # the rows that point at it, so they are kept aside and put back.
    for table in REFERRING:
        op.execute(f"CREATE TEMP TABLE {table}_kept AS SELECT * FROM {table}")
    for table in ("clients", "publishers"):
        with op.batch_alter_table(table, recreate="always", table_kwargs=table_kwargs):
            pass
    for table in REFERRING:
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_kept")
        op.execute(f"DROP TABLE {table}_kept")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's counter starts at the highest id copied.
        _rebuild(sqlite_autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild()
