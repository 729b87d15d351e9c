"""transcriber.ingest.watch: the watcher registers what the bucket's events announce,
publishes the jobs and deletes the messages, keeps what it could not handle, and survives an
outage; against a real moto server and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.support.ingest import Recorder, count, jobs_by_key, s3_record, upload
from tests.support.moto import faulty_proxy, free_port, start_server
from transcriber.config import Settings
from transcriber.db import make_engine
from transcriber.errors import StorageUnavailable
from transcriber.ingest.watch import Watcher
from transcriber.schema import AudioObject, TranscriptionJob
from transcriber.storage import s3_client, sqs_client


def queue_depth(settings: Settings) -> int:
    attributes = sqs_client(settings).get_queue_attributes(
        QueueUrl=settings.sqs_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_the_watcher_registers_uploads_publishes_and_deletes(
    db: Engine, moto_bucket: Settings
) -> None:
    keys = ["P1/PT-1/20260314T101500Z.wav", "P1/PT-1/20260314T101501Z.wav", "P2/a b/ü.ogg"]
    for key in keys:
        upload(moto_bucket, key, metadata={"facility": "P9"} if "ü" in key else None)
    upload(moto_bucket, "P1/notes.txt")
    publish = Recorder(db)
    watcher = Watcher(moto_bucket, db, publish, wait_time_seconds=1)
    assert watcher.run_once() == 3
    assert len(publish.calls) == 1
    assert len(publish.ids) == 3
    assert count(db, AudioObject) == 3
    assert sorted(k for k, *_ in jobs_by_key(db)) == sorted(keys)
    assert queue_depth(moto_bucket) == 0
    assert watcher.run_once() == 0


@pytest.mark.fault("P1")
def test_a_redelivered_event_registers_one_job(db: Engine, moto_bucket: Settings) -> None:
    sqs = sqs_client(moto_bucket)
    sqs.purge_queue(QueueUrl=moto_bucket.sqs_queue_url)  # the notification's TestEvent
    upload(moto_bucket, "P1/PT-1/20260314T101500Z.wav")
    [message] = sqs.receive_message(QueueUrl=moto_bucket.sqs_queue_url, WaitTimeSeconds=1)[
        "Messages"
    ]
    sqs.delete_message(QueueUrl=moto_bucket.sqs_queue_url, ReceiptHandle=message["ReceiptHandle"])
    for _ in range(3):
        sqs.send_message(QueueUrl=moto_bucket.sqs_queue_url, MessageBody=message["Body"])
    publish = Recorder(db)
    watcher = Watcher(moto_bucket, db, publish, wait_time_seconds=1)
    assert watcher.run_once() == 1
    sqs.send_message(QueueUrl=moto_bucket.sqs_queue_url, MessageBody=message["Body"])
    assert watcher.run_once() == 0
    assert count(db, AudioObject) == 1
    assert count(db, TranscriptionJob) == 1
    assert publish.calls == [publish.ids]
    assert queue_depth(moto_bucket) == 0


def test_bad_messages_are_dropped_and_gone_objects_skipped(
    db: Engine, moto_bucket: Settings
) -> None:
    sqs = sqs_client(moto_bucket)
    sqs.send_message(QueueUrl=moto_bucket.sqs_queue_url, MessageBody="not an event")
    upload(moto_bucket, "P1/PT-1/gone.wav")
    s3_client(moto_bucket).delete_object(Bucket=moto_bucket.s3_bucket, Key="P1/PT-1/gone.wav")
    other = {
        "Records": [
            {
                **s3_record("x.wav"),
                "s3": {"bucket": {"name": "other-bucket"}, "object": {"key": "x.wav"}},
            }
        ]
    }
    sqs.send_message(QueueUrl=moto_bucket.sqs_queue_url, MessageBody=json.dumps(other))
    watcher = Watcher(moto_bucket, db, Recorder(db), wait_time_seconds=1)
    assert watcher.run_once() == 0
    assert count(db, AudioObject) == 0
    assert queue_depth(moto_bucket) == 0


def test_a_database_failure_keeps_the_messages(
    db: Engine, moto_bucket: Settings, tmp_path: Any
) -> None:
    upload(moto_bucket, "P1/PT-1/20260314T101500Z.wav")
    sqs = sqs_client(moto_bucket)
    # Messages come back at once instead of after the default 30 s.
    sqs.set_queue_attributes(
        QueueUrl=moto_bucket.sqs_queue_url, Attributes={"VisibilityTimeout": "0"}
    )
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: inserts fail
    publish = Recorder(db)
    try:
        with pytest.raises(Exception, match="no such table"):
            Watcher(moto_bucket, unmigrated, publish, wait_time_seconds=1).run_once()
    finally:
        unmigrated.dispose()
    assert publish.calls == []
    assert Watcher(moto_bucket, db, publish, wait_time_seconds=1).run_once() == 1
    assert len(publish.ids) == 1


def test_a_message_whose_object_cannot_be_read_stays_in_the_queue(
    db: Engine, moto_bucket: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    upload(moto_bucket, "P1/PT-1/20260314T101500Z.wav")
    sqs_client(moto_bucket).set_queue_attributes(
        QueueUrl=moto_bucket.sqs_queue_url, Attributes={"VisibilityTimeout": "0"}
    )
    publish = Recorder(db)
    with faulty_proxy(moto_bucket.s3_endpoint_url, fail=frozenset({"HEAD"})) as endpoint:
        settings = moto_bucket.model_copy(update={"s3_endpoint_url": endpoint})
        with pytest.raises(StorageUnavailable):
            Watcher(settings, db, publish, wait_time_seconds=1).run_once()
    assert count(db, AudioObject) == 0
    assert publish.calls == []
    assert Watcher(moto_bucket, db, publish, wait_time_seconds=1).run_once() == 1


def test_a_failed_publish_still_commits_and_deletes(db: Engine, moto_bucket: Settings) -> None:
    upload(moto_bucket, "P1/PT-1/20260314T101500Z.wav")

    def broken_broker(job_ids: Sequence[int]) -> None:
        raise ConnectionError("the broker is down")

    assert Watcher(moto_bucket, db, broken_broker, wait_time_seconds=1).run_once() == 1
    assert jobs_by_key(db)[0][2] == "queued"  # the sweeper publishes it later
    assert queue_depth(moto_bucket) == 0


def test_the_watcher_survives_an_outage_and_stops_promptly(
    db: Engine, moto_bucket: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # fail fast: the watcher does the backing off
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    queue_url = moto_bucket.sqs_queue_url.replace(moto_bucket.s3_endpoint_url, endpoint)
    settings = moto_bucket.model_copy(
        update={
            "s3_endpoint_url": endpoint,
            "sqs_queue_url": queue_url,
            "sweep_interval_seconds": 1,
        }
    )
    upload(moto_bucket, "P1/PT-1/20260314T101500Z.wav")
    publish = Recorder(db)
    sweeps: list[float] = []

    def sweep() -> int:
        sweeps.append(time.monotonic())
        return 0

    watcher = Watcher(
        settings, db, publish, sweep, wait_time_seconds=1, backoff_initial_s=0.2, backoff_max_s=0.8
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    server = None
    try:
        time.sleep(1.5)  # nothing listens on the port: rounds fail and back off
        assert thread.is_alive()
        assert publish.calls == []
        server = start_server(port)  # the endpoint comes back (same moto state)
        deadline = time.monotonic() + 15
        while not publish.calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(publish.ids) == 1
        assert sweeps
    finally:
        stopped_at = time.monotonic()
        stop.set()
        thread.join(timeout=10)
        if server is not None:
            server.stop()
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < 3  # within one long poll
    assert count(db, TranscriptionJob) == 1


def test_a_watcher_needs_a_queue(db: Engine) -> None:
    with pytest.raises(ValueError, match="SQS_QUEUE_URL"):
        Watcher(Settings(), db, Recorder(db))
