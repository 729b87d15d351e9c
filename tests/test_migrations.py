"""Migrations: up, down to nothing, up again; the models and the migrated schema agree."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from tests.support.databases import TABLES, VIEWS, create_job, run_cli
from transcriber import migrate
from transcriber.db import make_engine
from transcriber.schema import Base


def _objects(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        return set(inspector.get_table_names()), set(inspector.get_view_names())
    finally:
        engine.dispose()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(url, "db", *args)


def test_cli_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    done = _cli(empty_db_url, "upgrade")
    assert done.returncode == 0, done.stderr
    tables, views = _objects(empty_db_url)
    assert tables >= TABLES
    assert views == VIEWS
    assert "(up to date)" in _cli(empty_db_url, "current").stdout

    done = _cli(empty_db_url, "downgrade", "base")
    assert done.returncode == 0, done.stderr
    tables, views = _objects(empty_db_url)
    assert tables <= {"alembic_version"}, f"left behind: {tables}"
    assert views == set()
    assert "base" in _cli(empty_db_url, "current").stdout

    done = _cli(empty_db_url, "upgrade")
    assert done.returncode == 0, done.stderr
    tables, views = _objects(empty_db_url)
    assert tables >= TABLES
    assert views == VIEWS


def test_models_match_migrated_schema(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": migrate.include_name,
                },
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_unmigrated_database_gets_a_clear_error(empty_db_url: str) -> None:
    done = run_cli(empty_db_url, "sensors", "demo-data", "--days", "1")
    assert done.returncode == 1
    assert "run `transcriber db upgrade` first" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_database_gets_a_clear_error() -> None:
    done = _cli("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", "upgrade")
    assert done.returncode == 1
    assert "cannot use the database postgresql+psycopg://nobody:***@127.0.0.1:1/none" in (
        done.stderr
    )
    assert "secret" not in done.stderr
    assert "Traceback" not in done.stderr


def test_stepping_down_and_up_keeps_the_data(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        job_id = create_job(engine, datetime(2026, 1, 1, tzinfo=UTC))
        migrate.downgrade(empty_db_url, "0001")
        migrate.upgrade(empty_db_url)
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM transcription_jobs WHERE id = :id"), {"id": job_id}
            ).scalar_one()
        assert count == 1
    finally:
        engine.dispose()
