"""A broker that lost its queue, and one whose queue is only long, with the settings users get:
the sweeper every SWEEP_INTERVAL_SECONDS (60 s), REQUEUE_AFTER_SECONDS 900.

The sweeper compares what the database says is waiting with what Redis holds
(transcriber.sweeper): a queue flushed mid-batch is published again at the next sweep, not
fifteen minutes later, and a backlog of thousands whose messages are all there is never
published again, however long it has waited.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import soundfile
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from tests.support.broker import TaskQueue
from tests.support.databases import DatabaseFactory
from tests.support.service import DATA, RedisProcess, Service, service_fixture
from tests.support.slow_worker import SECONDS as SLOW_JOB_SECONDS
from transcriber import jobs, migrate, sweeper
from transcriber.broker_queue import redis_queue
from transcriber.config import Settings
from transcriber.db import make_engine
from transcriber.schema import AudioObject, TranscriptionJob

ROOT = Path(__file__).parents[1]
CLIP = (DATA / "speech_8k_mono.wav").read_bytes()  # "Pressure on line four is rising..."
SWEEP_INTERVAL = Settings.model_fields["sweep_interval_seconds"].default
REQUEUE_AFTER = Settings.model_fields["requeue_after_seconds"].default
BACKLOG = 5000
SWEEPS = 5

# A Redis of its own, to flush. The stack's helper runs the sweeper every 5 s for the other
# tests' patience; here it runs at the default interval, and REQUEUE_AFTER_SECONDS is left alone.
service = service_fixture(
    "faults-broker", own_broker=True, TRANSCRIBER_SWEEP_INTERVAL_SECONDS=str(SWEEP_INTERVAL)
)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 100 s of speech: too long to be packed, and seconds of work for tiny.en."""
    speech, rate = soundfile.read(DATA / "speech_16k_mono.wav", dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    soundfile.write(path, np.concatenate([speech] * 30), rate)
    return path.read_bytes()


def _status(service: Service, keys: list[str]) -> dict[str, str]:
    rows = service.query(
        "SELECT a.key, j.status FROM audio_objects a "
        "JOIN transcription_jobs j ON j.audio_object_id = a.id WHERE a.key = ANY(:keys)",
        keys=keys,
    )
    return {row.key: row.status for row in rows}


@pytest.mark.fault("P1", "P3")
def test_a_queue_flushed_mid_batch_is_published_again_within_a_sweep_interval(
    service: Service, long_clip: bytes, figures: dict[str, Any]
) -> None:
    """Default settings (sweeper every 60 s, REQUEUE_AFTER_SECONDS 900), one worker: of a batch
    of 12 uploads, two are transcribed, one long one is being transcribed and nine wait in
    Redis when its data is flushed (FLUSHALL: what a restart without persistence or a failover
    to a fresh replica leaves). The next sweep sees that Redis holds fewer messages than the
    database has queued jobs and publishes the nine again: all 12 succeed, once each, within
    120 s of the flush."""
    assert "TRANSCRIBER_REQUEUE_AFTER_SECONDS" not in service.env
    assert service.env["TRANSCRIBER_SWEEP_INTERVAL_SECONDS"] == str(SWEEP_INTERVAL)
    queue = service.env["TRANSCRIBER_QUEUE"]
    client = redis.Redis.from_url(service.env["TRANSCRIBER_BROKER_URL"])
    first = [f"flush/plant-a/PT-1/20260314T140{n}00Z.wav" for n in range(2)]
    long_key = "flush/plant-a/PT-1/20260314T141000Z.wav"
    waiting = [f"flush/plant-a/TT-1/20260314T14{n + 20}00Z.wav" for n in range(9)]
    for key in first:
        service.upload(key, CLIP)
    for key in first:
        service.wait_for(f"{key} to succeed", service.succeeded(key))
    service.upload(long_key, long_clip)
    service.wait_for("the long one to run", service.running("flush/plant-a/PT-1/20260314T141"))
    for key in waiting:
        service.upload(key, CLIP)
    # The worker is busy with the long one (one process, one message at a time): the nine
    # wait in Redis, each as one message.
    service.wait_for(
        "the nine to wait in Redis",
        lambda: (
            list(_status(service, waiting).values()) == ["queued"] * 9 and client.llen(queue) == 9
        ),
        timeout=60,
    )
    with client.pipeline(transaction=True) as pipe:  # how many were lost, and the loss, at once
        pipe.llen(queue)
        pipe.flushall()
        lost, _ = pipe.execute()
    flushed = time.monotonic()
    assert _status(service, [long_key]) == {long_key: "running"}, "the flush was not mid-batch"
    noticed = None
    deadline = flushed + 120
    keys = [*first, long_key, *waiting]
    while time.monotonic() < deadline:
        states = _status(service, keys)
        if noticed is None and any(states[key] != "queued" for key in waiting):
            noticed = time.monotonic() - flushed
        if set(states.values()) == {"succeeded"}:
            break
        time.sleep(0.5)
    recovered = time.monotonic() - flushed
    assert set(_status(service, keys).values()) == {"succeeded"}, service.logs()
    rows = service.query(
        "SELECT j.attempts, (SELECT count(*) FROM transcripts t WHERE t.job_id = j.id) AS n "
        "FROM transcription_jobs j JOIN audio_objects a ON a.id = j.audio_object_id "
        "WHERE a.key = ANY(:keys)",
        keys=keys,
    )
    assert len(rows) == 12
    assert {row.n for row in rows} == {1}
    assert service.integrity_problems() == []
    log = (service.workdir / "watch.log").read_text(errors="replace")
    assert "the broker lost task messages: 9 job(s) queued in the database (" in log
    assert "0 message(s) in queue" in log
    figures["jobs"] = len(keys)
    figures["transcribed / running / waiting in Redis at the flush"] = f"2 / 1 / {lost}"
    figures["sweep interval (s)"] = SWEEP_INTERVAL
    figures["REQUEUE_AFTER_SECONDS"] = REQUEUE_AFTER
    figures["flush to the first lost job taken (s)"] = round(noticed or recovered, 1)
    figures["flush to all 12 transcribed (s)"] = round(recovered, 1)
    figures["most attempts of a job"] = max(int(row.attempts) for row in rows)


@pytest.fixture
def backlog(
    postgres_server: str, databases: DatabaseFactory, tmp_path: Path
) -> Iterator[tuple[Engine, Settings, TaskQueue]]:
    """A migrated PostgreSQL database and a Redis of their own, with the default settings."""
    url = databases.postgresql(postgres_server)
    migrate.upgrade(url)
    engine = make_engine(url)
    broker = RedisProcess(tmp_path)
    broker.start()
    settings = Settings(
        database_url=url, broker_url=broker.url, queue=f"backlog-{uuid.uuid4().hex[:8]}"
    )
    tasks = TaskQueue(broker.url, settings.queue)
    try:
        yield engine, settings, tasks
    finally:
        tasks.close()
        broker.stop()
        engine.dispose()


def _queued_an_hour_ago(engine: Engine, count: int) -> list[int]:
    """``count`` queued jobs (and their objects), each waiting for an hour already."""
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    objects = [
        {
            "bucket": "transcriber-audio",
            "key": f"backlog/plant-a/PT-1/{n:05d}.wav",
            "etag": uuid.uuid4().hex,
            "size_bytes": 1000,
            "recorded_at": an_hour_ago,
            "recorded_at_source": "key",
            "meta": {},
        }
        for n in range(count)
    ]
    with Session(engine) as session, session.begin():
        audio = session.scalars(
            insert(AudioObject).returning(AudioObject.id, sort_by_parameter_order=True), objects
        ).all()
        rows = [{"audio_object_id": a, "status": "queued", "queued_at": an_hour_ago} for a in audio]
        return list(
            session.scalars(
                insert(TranscriptionJob).returning(
                    TranscriptionJob.id, sort_by_parameter_order=True
                ),
                rows,
            ).all()
        )


@pytest.mark.fault("P3")
def test_a_backlog_of_5000_with_an_intact_queue_is_never_published_again(
    backlog: tuple[Engine, Settings, TaskQueue], figures: dict[str, Any]
) -> None:
    """5,000 jobs queued an hour ago (the rule by age alone would publish them again), their
    5,000 messages in Redis, one slow worker taking them one at a time: the sweeper's own
    function, called five times as five sweep intervals would, against that Redis and
    PostgreSQL with the default settings, publishes nothing, and Redis never holds more
    messages than before."""
    engine, settings, tasks = backlog
    ids = _queued_an_hour_ago(engine, BACKLOG)
    tasks.publish(ids)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRANSCRIBER_")},
        "TRANSCRIBER_DATABASE_URL": settings.database_url,
        "TRANSCRIBER_BROKER_URL": settings.broker_url,
        "TRANSCRIBER_QUEUE": settings.queue,
        "PYTHONPATH": str(ROOT),  # for tests.support.slow_worker
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            *("-m", "celery", "-A", "tests.support.slow_worker", "worker", "-Q", settings.queue),
            *("-c", "1", "--pool", "prefork", "-l", "WARNING", "--without-gossip"),
            *("--without-mingle", "--without-heartbeat"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker = redis_queue(settings)
    assert broker is not None
    published: list[int] = []
    messages: list[int] = []
    took_ms: list[float] = []

    def held() -> int:
        return tasks.length() + tasks.reserved()

    try:
        deadline = time.monotonic() + 60
        while _running(engine) == 0:  # the worker has taken its first job
            assert time.monotonic() < deadline, "the slow worker took no job"
            time.sleep(0.2)
        before = held()
        for _ in range(SWEEPS):
            started = time.perf_counter()
            published += sweeper.sweep(engine, settings, tasks.publish, broker)
            took_ms.append((time.perf_counter() - started) * 1000)
            messages.append(held())
            time.sleep(SLOW_JOB_SECONDS)
        finished = BACKLOG - _queued(engine) - _running(engine)
    finally:
        broker.close()
        worker.terminate()
        worker.wait(30)
    assert published == []
    assert before <= BACKLOG
    assert max(messages) <= before
    assert finished >= 1
    # What the rule by age alone would do at every one of those sweeps.
    by_age = jobs.sweep(engine, settings, lambda ids: None)
    assert len(by_age) == jobs.SWEEP_BATCH
    figures["jobs queued an hour ago"] = BACKLOG
    figures["sweeps"] = SWEEPS
    figures["jobs published again"] = len(published)
    figures["messages in Redis before / after"] = f"{before:,} / {messages[-1]:,}"
    figures["jobs the slow worker finished meanwhile"] = finished
    figures["slowest sweep (ms)"] = round(max(took_ms), 1)
    figures["the rule by age alone, per sweep"] = len(by_age)


def _queued(engine: Engine) -> int:
    return jobs.status(engine).counts["queued"]


def _running(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(
            conn.execute(
                select(TranscriptionJob.id).where(TranscriptionJob.status == "running")
            ).all()
        )
