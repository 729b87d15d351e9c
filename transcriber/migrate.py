"""Run the Alembic migrations against a database URL (what `transcriber db` wraps)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from transcriber.db import get_engine, make_engine
from transcriber.errors import NotMigrated

# Objects the migrations create by hand on one dialect and the models do not describe;
# autogenerate must neither report nor drop them.
# (SQLite's full-text tables; PostgreSQL's jobs per status, kept by triggers.)
_DIALECT_ONLY_TABLE_PREFIXES = ("transcript_segments_fts", "transcription_job_counts")
_DIALECT_ONLY_COLUMNS = {("transcript_segments", "text_search")}
_DIALECT_ONLY_INDEXES = {"ix_transcript_segments_text_search"}


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic's ``include_name`` hook: leave out the dialect-only objects."""
    if type_ == "table" and name and name.startswith(_DIALECT_ONLY_TABLE_PREFIXES):
        return False
    if type_ == "column" and (parent_names.get("table_name"), name) in _DIALECT_ONLY_COLUMNS:
        return False
    return not (type_ == "index" and name in _DIALECT_ONLY_INDEXES)


def migrations_dir() -> Path:
    """Where the migration scripts are: ``migrations/`` in a checkout, installed as
    ``transcriber.migrations`` (see ``package-dir`` in pyproject.toml)."""
    return Path(str(files("transcriber.migrations")))


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base`` removes everything)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None when it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    """The newest revision this version of the code knows."""
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def require_migrated(engine: Engine) -> None:
    """Raise :class:`NotMigrated`, with the command that fixes it, unless the schema is current."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    if current != head:
        state = "has no schema" if current is None else f"is at revision {current}, not {head}"
        url = engine.url.render_as_string(hide_password=True)
        raise NotMigrated(f"the database {url} {state}: run `transcriber db upgrade` first")


def migrated_engine() -> Engine:
    """The configured database's shared engine, once its schema is known to be current."""
    engine = get_engine()
    require_migrated(engine)
    return engine
