"""The whole service for the benchmarks, and the tools they measure it with.

:func:`bench_service` starts what tests/support/service.py's :func:`running_service` starts for
the tests (a moto S3 bucket notifying SQS, ``transcriber watch``, PostgreSQL, Redis) in a
database and a moto server of its own, without a worker: each benchmark starts its workers
with the concurrency and threads it compares (:func:`start_worker`).

Times come from the job rows, not from polling: ``transcription_jobs.finished_at`` is stamped
by the worker in the very transaction that writes the transcript, so the transcript is
queryable a commit later (milliseconds). Polling fast enough to time a job to 10 ms would
itself take CPU from the worker being measured on a two-core machine; the benchmarks poll
every half second only to learn that the jobs are done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.bench.corpus import Clip
from tests.support.databases import POSTGRES_URL, DatabaseFactory
from tests.support.moto import FAKE_AWS_ENV, free_port, start_server
from tests.support.service import REDIS_URL, Service, running_service
from transcriber.storage import s3_client

MB = 1024 * 1024  # MiB, as ps and top count megabytes
POLL_S = 0.5


@contextmanager
def _fake_aws() -> Iterator[None]:
    """boto3 in this process (the uploads) finds moto's fake keys and nothing real."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(FAKE_AWS_ENV)
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(saved)


@contextmanager
def bench_service(name: str, **overrides: str) -> Iterator[Service]:
    """A stack with the watcher running and no worker: moto (in this process), a new
    PostgreSQL database, the machine's Redis on a queue of its own. ``overrides`` are
    TRANSCRIBER_ variables for every process. Everything is removed on the way out."""
    # Any, not str: mypy cannot tell these from running_service's own keyword flags.
    environment: dict[str, Any] = dict(overrides)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    databases = DatabaseFactory(workdir)
    try:
        with _fake_aws():
            server = start_server(free_port())
            host, port = server.get_host_and_port()
            try:
                with running_service(
                    moto_endpoint=f"http://{host}:{port}",
                    broker_url=REDIS_URL,
                    database_url=databases.postgresql(POSTGRES_URL),
                    workdir=workdir,
                    worker=False,
                    **environment,
                ) as service:
                    yield service
            finally:
                server.stop()
    finally:
        databases.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def start_worker(
    service: Service,
    name: str,
    *,
    concurrency: int,
    threads: int,
    timeout: float = 120,
    **env: str,
) -> None:
    """A Celery worker with ``concurrency`` pool processes of ``threads`` CTranslate2 threads
    each, and the TRANSCRIBER_ variables ``env``, started and ready to take tasks (its pool
    processes have not loaded the model yet: see :func:`warm_up`)."""
    service.start_worker(
        name, concurrency=concurrency, env={"TRANSCRIBER_CPU_THREADS": str(threads), **env}
    )
    log = service.workdir / f"{name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(service.children(name)) == concurrency and "ready." in log.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker {name} did not start {concurrency} processes\n{service.logs()}")


def warm_up(service: Service, name: str, clip: Clip, concurrency: int) -> None:
    """Run one job per pool process of worker ``name`` (each loads its model on its first
    job), so that what is measured afterwards is the steady state, as in a worker that has
    been up for a while. Model loading is timed on its own elsewhere."""
    log = service.workdir / f"{name}.log"
    for attempt in range(20):
        # Keys of one folder: no facility in them, so no hotwords (the measured clips have
        # none either, as bare faster-whisper has none).
        base = clip.key.rsplit("/", 1)[-1]
        keys = [f"warm-up/{attempt}-{n}-{base}" for n in range(concurrency)]
        upload(service, [replace(clip, key=key) for key in keys])
        wait_finished(service, keys, timeout=300)
        # Celery names the pool process that ran each task in its log.
        ran = {
            line.split("ForkPoolWorker-")[1].split("]")[0]
            for line in log.read_text().splitlines()
            if "ForkPoolWorker-" in line and "succeeded" in line
        }
        if len(ran) >= concurrency:
            return
    raise RuntimeError(f"not every pool process of {name} ran a warm-up job")


def upload(service: Service, clips: Sequence[Clip], threads: int = 1) -> dict[str, float]:
    """PUT the clips into the bucket, ``threads`` at a time; when each PUT returned (epoch s)."""
    s3 = s3_client(service.settings)
    bucket = service.settings.s3_bucket
    done: dict[str, float] = {}

    def put(clip: Clip) -> None:
        s3.put_object(Bucket=bucket, Key=clip.key, Body=clip.data)
        done[clip.key] = time.time()

    if threads == 1:
        for clip in clips:
            put(clip)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, clips))
    return done


@dataclass(frozen=True)
class JobRow:
    """One job's outcome and times (epoch seconds), from the database."""

    key: str
    status: str
    attempts: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    text: str | None
    processing_s: float | None
    error: str | None


def job_rows(service: Service, keys: Sequence[str]) -> dict[str, JobRow]:
    """The job of each of ``keys`` (the newest, should there be several)."""
    rows = service.query(
        "SELECT a.key, j.status, j.attempts, j.queued_at, j.started_at, j.finished_at, "
        "t.text, t.processing_s, j.error_category FROM transcription_jobs j "
        "JOIN audio_objects a ON a.id = j.audio_object_id "
        "LEFT JOIN transcripts t ON t.job_id = j.id WHERE a.key = ANY(:keys) ORDER BY j.id",
        keys=list(keys),
    )
    return {
        row.key: JobRow(
            row.key,
            row.status,
            row.attempts,
            _epoch(row.queued_at) or 0.0,
            _epoch(row.started_at),
            _epoch(row.finished_at),
            row.text,
            row.processing_s,
            row.error_category,
        )
        for row in rows
    }


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def wait_finished(
    service: Service, keys: Sequence[str], timeout: float, poll_s: float = POLL_S
) -> dict[str, JobRow]:
    """Wait until every one of ``keys`` has a finished job; their rows. Raises on a job that
    did not succeed, or on the timeout, with the logs."""
    deadline = time.monotonic() + timeout
    while True:
        rows = job_rows(service, keys)
        done = [r for r in rows.values() if r.status not in ("queued", "running")]
        if len(done) == len(keys):
            failed = [r for r in done if r.status != "succeeded"]
            if failed:
                raise RuntimeError(f"jobs did not succeed: {failed[:5]}\n{service.logs()}")
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(keys) - len(done)} of {len(keys)} jobs unfinished after {timeout:.0f} s"
                f"\n{service.logs()}"
            )
        time.sleep(poll_s)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- Memory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySample:
    """Jobs finished so far and, per pool process, resident and peak resident memory (bytes)."""

    t: float
    finished: int
    rss: dict[int, int]
    hwm: dict[int, int]


def _peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory (``VmHWM``): unlike a
    sample of RSS, it catches a peak that lasts only a few milliseconds."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class MemorySampler:
    """Samples, every ``period_s``, how many jobs under ``prefix`` have finished and the memory
    of each pool process of worker ``name`` (a child that Celery replaced shows under its own
    pid)."""

    service: Service
    name: str
    prefix: str
    period_s: float = 0.1
    samples: list[MemorySample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        like = self.prefix.replace("%", r"\%").replace("_", r"\_") + "%"
        while not self._stop.wait(self.period_s):
            (row,) = self.service.query(
                "SELECT count(*) AS n FROM transcription_jobs j JOIN audio_objects a "
                "ON a.id = j.audio_object_id WHERE a.key LIKE :like "
                "AND j.status NOT IN ('queued', 'running')",
                like=like,
            )
            rss, hwm = {}, {}
            for child in self.service.children(self.name):
                try:
                    rss[child.pid] = child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                hwm[child.pid] = _peak_rss(child.pid)
            self.samples.append(MemorySample(time.monotonic(), int(row.n), rss, hwm))

    @contextmanager
    def sampling(self) -> Iterator[MemorySampler]:
        thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def at(self, finished: int) -> MemorySample | None:
        """The first sample taken once ``finished`` jobs were done."""
        return next((s for s in self.samples if s.finished >= finished), None)

    def window(self, first: int, last: int) -> list[MemorySample]:
        """The samples taken while jobs ``first`` to ``last`` (counted from 1) ran."""
        return [s for s in self.samples if first - 1 <= s.finished < last]
