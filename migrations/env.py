"""Alembic environment: the URL comes from our settings, the target is our models.

`transcriber db ...` passes an open connection (``config.attributes["connection"]``) or a URL
(``config.attributes["url"]``, kept out of the ini parser, which would choke on a ``%`` in an
escaped password); plain ``alembic`` falls back to ``TRANSCRIBER_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from transcriber.config import get_settings
from transcriber.db import make_engine
from transcriber.migrate import include_name
from transcriber.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return str(url) if url else get_settings().database_url


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        include_name=include_name,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Batch mode rebuilds a table by copy, drop and rename; with foreign keys
                # enforced, the drop would cascade into every table that refers to it.
                connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
                connection.commit()
            _configure_and_run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
