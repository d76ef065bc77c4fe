# Alembic environment for notifd. notifd runs migrations itself (db.upgrade, `notifctl db
# upgrade`) and hands its connection in through `config.attributes["connection"]`; the
# `alembic` command line works too, given `-x url=...`.
from alembic import context
from sqlalchemy import create_engine

from notifd.store import metadata

config = context.config


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: Alembic copies and swaps the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()
