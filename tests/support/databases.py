"""Fresh databases on SQLite and on a real PostgreSQL server, and what tests put in them.

PostgreSQL comes from ``TEST_POSTGRES_URL`` (default: the local server, database ``test``);
each test run creates its own databases there and drops them afterwards. Where no server
answers, the PostgreSQL tests skip, except when ``TEST_REQUIRE_SERVICES=1`` (set by
``.ci/run``): then they fail, so that CI can never go green without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests.support import REQUIRE_SERVICES
from transcriber import migrate
from transcriber.db import make_engine
from transcriber.schema import AudioObject, Base, TranscriptionJob

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DIALECTS = ["sqlite", "postgresql"]

# Every table and view of the schema, for checks that nothing is missing or left behind.
TABLES = {
    "facilities",
    "sensors",
    "sensor_readings",
    "audio_objects",
    "transcription_jobs",
    "transcripts",
    "transcript_segments",
    "transcript_words",
    "transcript_mentions",
}
VIEWS = {"segment_readings", "latest_transcripts", "spoken_readings"}


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``transcriber ARGS`` as a user would, against the database at ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "transcriber", *args],
        env={**os.environ, "TRANSCRIBER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )


def create_job(engine: Engine, recorded_at: datetime, key: str = "plant/PT-1/note.wav") -> int:
    """An audio object with one queued job; returns the job's id."""
    with Session(engine) as session, session.begin():
        audio = AudioObject(
            bucket="audio",
            key=key,
            etag=uuid.uuid4().hex,
            size_bytes=1000,
            recorded_at=recorded_at,
            recorded_at_source="key",
            meta={},
        )
        session.add(audio)
        session.flush()
        job = TranscriptionJob(audio_object_id=audio.id, status="queued", options={})
        session.add(job)
        session.flush()
        return job.id


def _postgres_unavailable() -> str | None:
    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}"
    finally:
        engine.dispose()
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skip, or fail in CI, without one)."""
    problem = _postgres_unavailable()
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(problem + " (TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)
    return POSTGRES_URL


class DatabaseFactory:
    """Makes empty databases and removes them at the end of the test session."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.postgres_names: list[str] = []

    def sqlite(self) -> str:
        return f"sqlite:///{self.tmp_dir / f'{uuid.uuid4().hex}.db'}"

    def postgresql(self, admin_url: str) -> str:
        name = f"transcriber_test_{uuid.uuid4().hex[:12]}"
        admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        self.postgres_names.append(name)
        return make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.postgres_names:
            return
        admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                for name in self.postgres_names:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("sqlite"))
    yield factory
    factory.drop_all()


def _empty_database(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    if request.param == "postgresql":
        return databases.postgresql(request.getfixturevalue("postgres_server"))
    return databases.sqlite()


@pytest.fixture(params=DIALECTS)
def empty_db_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    """The URL of a new, empty database, once per dialect."""
    return _empty_database(request, databases)


@pytest.fixture(scope="module", params=DIALECTS)
def migrated_db_url(request: pytest.FixtureRequest, databases: DatabaseFactory) -> str:
    """A database migrated to head, shared by the tests of a module (see ``db``)."""
    url = _empty_database(request, databases)
    migrate.upgrade(url)
    return url


@pytest.fixture
def db(migrated_db_url: str) -> Iterator[Engine]:
    """An engine on a migrated database that is emptied again after the test."""
    engine = make_engine(migrated_db_url)
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        engine.dispose()
