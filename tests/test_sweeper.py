"""The sweeper's comparison of a Redis broker's queue with the database (both dialects): a long
queue is left alone, a lost one is published again whole, a partly lost one in its missing
jobs only; and what the reader of the broker sees (lists, reservations, job ids)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from tests.support.broker import TaskQueue
from tests.support.moto import free_port
from transcriber import jobs, sweeper
from transcriber.broker_queue import RedisQueue, job_id_of, redis_queue
from transcriber.config import Settings, get_settings
from transcriber.schema import AudioObject, TranscriptionJob

HOUR_AGO = timedelta(hours=1)


@pytest.fixture
def queue(redis_server: str) -> Iterator[TaskQueue]:
    tasks = TaskQueue(redis_server, f"sweeper-{uuid.uuid4().hex[:8]}")
    yield tasks
    tasks.close()


@pytest.fixture
def settings(queue: TaskQueue) -> Settings:
    """The default settings, on the test's queue (REQUEUE_AFTER_SECONDS 900)."""
    return Settings(broker_url=queue.url, queue=queue.queue, s3_bucket="audio")


@pytest.fixture
def broker(settings: Settings) -> Iterator[RedisQueue]:
    reader = redis_queue(settings)
    assert reader is not None
    yield reader
    reader.close()


def _queued(
    engine: Engine, count: int, *, waited: timedelta = HOUR_AGO, bucket: str = "audio"
) -> list[int]:
    """``count`` queued jobs that have waited ``waited`` (so the rule by age would publish
    them again); their ids."""
    with Session(engine) as session, session.begin():
        objects = [
            AudioObject(
                bucket=bucket,
                key=f"plant/PT-1/{uuid.uuid4().hex}.wav",
                etag=uuid.uuid4().hex,
                size_bytes=1000,
                recorded_at=datetime(2026, 1, 1, tzinfo=UTC),
                recorded_at_source="key",
                meta={},
            )
            for _ in range(count)
        ]
        session.add_all(objects)
        session.flush()
        rows = [TranscriptionJob(audio_object_id=o.id, status="queued") for o in objects]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
        session.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id.in_(ids))
            .values(queued_at=datetime.now(UTC) - waited)
        )
    return ids


@pytest.mark.fault("P3")
def test_a_long_intact_queue_is_not_published_again(
    db: Engine, queue: TaskQueue, settings: Settings, broker: RedisQueue
) -> None:
    """30 jobs queued an hour ago and their 30 messages in Redis, two reserved by a worker:
    three sweeps publish none of them again, where the rule by age alone would publish all
    30."""
    ids = _queued(db, 30)
    queue.publish(ids)
    with queue.taken(2):  # two of them reserved by a worker
        for _ in range(3):
            assert sweeper.sweep(db, settings, queue.publish, broker) == []
        assert (queue.length(), queue.reserved()) == (28, 2)
    # The rule by age alone would have published them again (200 at most a sweep).
    assert sorted(jobs.sweep(db, settings, lambda ids: None)) == ids


@pytest.mark.fault("P3")
def test_a_lost_queue_is_published_again_whole_in_one_sweep(
    db: Engine,
    queue: TaskQueue,
    settings: Settings,
    broker: RedisQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """253 jobs whose messages Redis lost, 250 queued an hour ago and 3 a moment ago: one
    sweep publishes every one of them again (the rule by age takes 200 a sweep, and none of
    the newest), with one warning that gives the counts; the next sweep publishes nothing."""
    monkeypatch.setattr(sweeper, "REPUBLISH_BATCH", 100)
    ids = _queued(db, jobs.SWEEP_BATCH + 50)  # more than the rule by age takes at a time
    ids += _queued(db, 3, waited=timedelta(0))  # lost just after they were published
    queue.publish(ids)
    assert broker.read() is not None
    queue.drop()
    with caplog.at_level("WARNING", logger="transcriber.sweeper"):
        published = sweeper.sweep(db, settings, queue.publish, broker)
    assert published == ids  # every one, in id order
    assert queue.length() == len(ids)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{len(ids)} job(s) queued in the database (3 in the last 10 s), 0 message(s)" in (
        warning
    )
    # The broker holds them all again: the next sweep publishes nothing.
    assert sweeper.sweep(db, settings, queue.publish, broker) == []


@pytest.mark.fault("P3")
def test_only_the_jobs_the_broker_lacks_are_published_again(
    db: Engine, queue: TaskQueue, settings: Settings, broker: RedisQueue
) -> None:
    """Ten jobs queued a while ago, Redis holding the messages of seven (one reserved by a
    worker): the sweep reads the job ids of the messages and publishes the other three again,
    once; not the jobs committed a moment ago and maybe not yet published."""
    ids = _queued(db, 10)
    _queued(db, 2, waited=timedelta(0))
    queue.publish(ids[:6])
    queue.publish(ids[6:7])
    with queue.taken(1):  # one of them held by a worker: not lost
        published = sweeper.sweep(db, settings, queue.publish, broker)
    assert published == ids[7:]
    assert sweeper.sweep(db, settings, queue.publish, broker) == []


def test_a_shortfall_that_resolves_within_a_second_is_no_loss(
    db: Engine, queue: TaskQueue, settings: Settings, broker: RedisQueue
) -> None:
    """A worker takes a message off the list a moment before it records it as reserved: a
    look in between sees one message too few. The second look does not."""
    (job,) = _queued(db, 1)
    late = threading.Timer(0.2, queue.publish, args=([job],))
    late.start()
    found = sweeper.compare(db, settings, broker)
    late.join()
    assert found is not None
    assert (found.waiting, found.reading.held, found.missing) == (1, 1, 0)


def test_after_a_restart_the_job_ids_are_checked_even_when_the_counts_agree(
    db: Engine, queue: TaskQueue, settings: Settings, broker: RedisQueue
) -> None:
    ids = _queued(db, 5)
    queue.publish([ids[0], *ids[:4]])  # five messages, one a duplicate: job 5 has none
    assert sweeper.sweep(db, settings, queue.publish, broker) == []  # the counts agree
    broker._run_id = "the run before"  # as if Redis restarted since the last sweep
    assert sweeper.sweep(db, settings, queue.publish, broker) == [ids[4]]


def test_a_message_reserved_longer_than_requeue_after_no_longer_counts(
    db: Engine, queue: TaskQueue, settings: Settings
) -> None:
    """Its worker may be gone (Redis gives it back only after the visibility timeout)."""
    (job,) = _queued(db, 1)
    queue.publish([job])
    reader = RedisQueue(queue.url, queue.queue, stale_after_s=0)
    try:
        with queue.taken(1):
            reading = reader.read()
            assert reading is not None
            assert (reading.messages, reading.reserved, reading.stale) == (0, 0, 1)
            assert sweeper.sweep(db, settings, queue.publish, reader) == [job]
    finally:
        reader.close()


def test_jobs_of_another_bucket_belong_to_another_queue(
    db: Engine, queue: TaskQueue, settings: Settings, broker: RedisQueue
) -> None:
    ours = _queued(db, 3)
    _queued(db, 4, bucket="other-bucket")  # fed to another queue by its own watcher
    assert sweeper.sweep(db, settings, queue.publish, broker) == ours
    assert sweeper.sweep(db, settings, queue.publish, broker) == []


def test_running_jobs_whose_lease_lapsed_are_published_as_before(
    db: Engine, queue: TaskQueue, settings: Settings, broker: RedisQueue
) -> None:
    (job,) = _queued(db, 1)
    with db.begin() as conn:
        conn.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id == job)
            .values(
                status="running",
                lease_owner="elsewhere/1/gone",
                lease_expires_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
    assert sweeper.sweep(db, settings, queue.publish, broker) == [job]


def test_without_a_readable_broker_the_rule_by_age_stands_in(db: Engine) -> None:
    old, recent = _queued(db, 1), _queued(db, 1, waited=timedelta(minutes=1))
    unreachable = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    reader = redis_queue(unreachable)
    assert reader is not None
    published: list[int] = []
    assert sweeper.sweep(db, unreachable, published.extend, reader) == old
    assert reader.last_error is not None
    assert "ConnectionError" in reader.last_error
    assert reader.job_ids() is None
    assert recent[0] not in published
    assert redis_queue(Settings(broker_url="amqp://guest@127.0.0.1//")) is None


def test_the_reader_counts_every_priority_list_and_only_its_queue(
    queue: TaskQueue, redis_server: str, broker: RedisQueue
) -> None:
    other = TaskQueue(redis_server, f"other-{uuid.uuid4().hex[:8]}")
    try:
        queue.publish([1, 2])
        queue.publish([3], priority=5)  # kombu keeps it in a list of its own
        other.publish([4, 5])
        with queue.taken(1), other.taken(2):
            reading = broker.read()
            assert reading is not None
            assert (reading.messages, reading.reserved, reading.stale) == (2, 1, 0)
            assert broker.job_ids() == {1, 2, 3}
        assert reading.run_id
        assert reading.uptime_s >= 0
        assert not reading.restarted
    finally:
        other.close()


@pytest.mark.parametrize(
    ("message", "job_id"),
    [
        (
            {
                "content-type": "application/json",
                "body": "W1s0Ml0sIHt9LCB7fV0=",  # [[42], {}, {}]
                "properties": {"body_encoding": "base64"},
            },
            42,
        ),
        ({"content-type": "application/json", "body": '{"args": [7]}'}, 7),  # protocol 1
        ({"content-type": "application/x-python-serialize", "body": "gASV"}, None),
        ({"content-type": "application/json", "body": "[[], {}, {}]"}, None),
        ({"content-type": "application/json", "body": '[["x"], {}, {}]'}, None),
        ("not a message", None),
    ],
)
def test_the_job_id_of_a_message(message: object, job_id: int | None) -> None:
    assert job_id_of(message) == job_id


def test_celery_status_shows_the_comparison(
    db: Engine,
    migrated_db_url: str,
    queue: TaskQueue,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.cli import transcriber

    ids = _queued(db, 4)
    queue.publish(ids[:1])
    monkeypatch.setenv("TRANSCRIBER_DATABASE_URL", migrated_db_url)
    monkeypatch.setenv("TRANSCRIBER_BROKER_URL", queue.url)
    monkeypatch.setenv("TRANSCRIBER_QUEUE", queue.queue)
    get_settings.cache_clear()
    runner = CliRunner()
    shown = runner.invoke(transcriber, ["status"])
    assert shown.exit_code == 0, shown.output
    lines = dict(line.split(maxsplit=1) for line in shown.output.splitlines())
    assert lines["queued"].strip() == "4"
    assert lines["queue"].split()[0] == "1"
    assert lines["reserved"].split()[0] == "0"
    assert "4 job(s) queued in the database (0 in the last 10 s)" in lines["DISAGREE"]
    assert "at least 3 lost" in lines["DISAGREE"]
    queue.publish(ids[1:])
    shown = runner.invoke(transcriber, ["status"])
    assert "agree       4 job(s) queued in the database (0 in the last 10 s), 4 message(s)" in (
        shown.output
    )
