"""Ingest rate: objects registered by `transcriber scan` and S3 events by the watcher.

100,000 small objects (10,000 with ``quick``), registered into freshly migrated PostgreSQL
databases, every new job published with the real Celery publish (``workers.tasks.publish``)
to the local Redis on a throwaway queue, whose length is checked afterwards and which is
deleted at the end.

- **scan**: ``transcriber.ingest.scan.scan`` over the whole bucket, timed from start to return
  (listing, the database lookups, registration, publishing). The listing comes from
  :mod:`tests.bench.listing_server`, which answers ListObjectVersions as S3 does: moto's
  listing costs time in proportion to the bucket for every page, and would be what a scan
  of 100,000 objects measured (that module has the figures).
- **scan again**: the same with everything already registered (the periodic reconciliation).
- **scan without ``s3:ListBucketVersions``**: the fallback, a plain listing and a HEAD per
  object, over one facility's sensor (a fifteenth of the bucket) on moto.
- **watcher**: ``Watcher.run_once`` in a loop until the first 10,000 events are registered,
  the time of the rounds summed. The events are S3 ``ObjectCreated:Put`` notifications as
  AWS writes them, and the watcher HEADs each object on moto. moto's SQS walks the whole
  queue several times for every message it receives, sends or deletes (it works out all of
  the queue's attributes each time), which makes a backlog of 100,000 messages quadratic
  (hours); AWS has no such cost. So between rounds, and outside the timed part, the queue is
  topped up to a backlog of a couple of receives.
- the parts on their own, to show where the time goes: the bare listing of versions, bare
  HEADs with the scan's thread pool, and registration plus publishing without S3
  (``transcriber.ingest.registration.register`` in the scan's batch size).

The servers run in child processes: in production S3 is another machine, and a server in
this process would take the interpreter lock from the code being measured. The moto child
fills its bucket through moto's backend directly (100,000 PUTs over HTTP would take minutes
and are not what is measured); nothing in the timed parts bypasses HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote_plus

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.bench.listing_server import listing_server
from tests.support.databases import POSTGRES_URL, DatabaseFactory
from tests.support.moto import FAKE_AWS_ENV, free_port, make_bucket, start_server
from tests.support.service import REDIS_URL
from transcriber import migrate
from transcriber.config import Settings, get_settings
from transcriber.db import make_engine
from transcriber.errors import StorageAccessDenied
from transcriber.ingest import scan as scanning
from transcriber.ingest.registration import register
from transcriber.ingest.scan import scan
from transcriber.ingest.watch import Watcher
from transcriber.jobs import Publish
from transcriber.schema import AudioObject, Facility, Sensor, TranscriptionJob
from transcriber.storage import (
    ObjectInfo,
    head,
    iter_current_versions,
    s3_client,
    sqs_client,
)

TARGET_PER_S = 5_000.0
FACILITIES = ("plant-a", "plant-b", "plant-c")
SENSORS = ("PT-1", "PT-2", "TT-1", "TT-2", "HT-1")
START = datetime(2026, 3, 14, tzinfo=UTC)
METADATA_EVERY = 10  # every tenth object carries user metadata that overrides its key
# SQS messages kept waiting for the watcher: moto's SQS reads every message of the queue, and
# works out all the queue's attributes, for each message it receives or sends (see above).
BACKLOG = 20
HEAD_SAMPLE = 5_000  # keys HEADed on their own: enough for a steady rate
# The watcher HEADs each object, about a hundred a second on moto: the first 10,000 events
# give its rate; all 100,000 would take twenty minutes more and say nothing new.
WATCHER_EVENTS = 10_000
# The fallback scan's share of the bucket: one facility's sensor, a fifteenth.
FALLBACK_PREFIX = f"{FACILITIES[0]}/{SENSORS[0]}/"


# --- The bucket -----------------------------------------------------------------------------


def _key(index: int) -> str:
    facility = FACILITIES[index % len(FACILITIES)]
    sensor = SENSORS[index // len(FACILITIES) % len(SENSORS)]
    stamp = (START + timedelta(seconds=index)).strftime("%Y%m%dT%H%M%SZ")
    return f"{facility}/{sensor}/{stamp}.wav"


def _body(index: int) -> bytes:
    # Distinct bodies, so that every object has its own ETag as real uploads would.
    return b"RIFF" + index.to_bytes(4, "big")


def _object(index: int) -> tuple[str, bytes]:
    return _key(index), _body(index)


def _serve(port: int, bucket: str, count: int, pipe: Connection) -> None:
    """The child process: a moto server whose bucket holds ``count`` objects."""
    os.environ.update(FAKE_AWS_ENV)
    # A line on stderr per request (werkzeug's access log) would cost the server more than
    # some requests do, and bury the benchmark's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    server = start_server(port)
    try:
        settings = make_bucket(f"http://127.0.0.1:{port}", name=bucket)
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for index in range(count):
            obj = backend.put_object(bucket, _key(index), _body(index), disable_notification=True)
            metadata = {"Content-Type": "audio/wav"}
            if index % METADATA_EVERY == 0:
                recorded = (START + timedelta(seconds=index, milliseconds=250)).isoformat()
                metadata |= {"x-amz-meta-facility": "plant-a", "x-amz-meta-recorded-at": recorded}
            obj.set_metadata(metadata)
        pipe.send(settings.sqs_queue_url)
        pipe.recv()  # until the parent is done
    finally:
        server.stop()


@contextmanager
def _moto_bucket(count: int) -> Iterator[Settings]:
    port = free_port()
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(port, bucket, count, child), daemon=True)
    process.start()
    try:
        deadline = time.monotonic() + 600
        while not parent.poll(1):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the moto server did not come up ({process.exitcode=})")
        queue_url = parent.recv()
        yield Settings(
            s3_endpoint_url=f"http://127.0.0.1:{port}", s3_bucket=bucket, sqs_queue_url=queue_url
        )
    finally:
        if process.is_alive():
            parent.send("stop")
        process.join(30)
        if process.is_alive():
            process.kill()


def _event_body(settings: Settings, index: int) -> str:
    """The S3 event notification for the upload of object ``index``, as AWS writes it."""
    key, body = _key(index), _body(index)
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-03-14T12:00:00.000Z",
                    "eventName": "ObjectCreated:Put",
                    "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                    "responseElements": {
                        "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                        "x-amz-id-2": uuid.uuid4().hex,
                    },
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "transcriber",
                        "bucket": {
                            "name": settings.s3_bucket,
                            "ownerIdentity": {"principalId": "EXAMPLE"},
                            "arn": f"arn:aws:s3:::{settings.s3_bucket}",
                        },
                        "object": {
                            "key": quote_plus(key, safe="/"),
                            "size": len(body),
                            "eTag": hashlib.md5(body).hexdigest(),
                            "sequencer": f"{index + 1:016X}",
                        },
                    },
                }
            ]
        }
    )


# --- Databases and the broker -----------------------------------------------------------------


def _database(factory: DatabaseFactory) -> Engine:
    url = factory.postgresql(POSTGRES_URL)
    migrate.upgrade(url)
    engine = make_engine(url)
    # Known facilities and sensors, so that placement links rows as it would in production.
    with Session(engine) as session, session.begin():
        for code in FACILITIES:
            facility = Facility(code=code, name=code, timezone="UTC")
            session.add(facility)
            session.flush()
            for sensor in SENSORS:
                session.add(
                    Sensor(facility_id=facility.id, code=sensor, kind="pressure", unit="kPa")
                )
    return engine


def _count(engine: Engine, what: type[Any], **where: str) -> int:
    statement = select(func.count()).select_from(what)
    for name, value in where.items():
        statement = statement.where(getattr(what, name) == value)
    with Session(engine) as session:
        return int(session.scalar(statement) or 0)


@dataclass
class _Broker:
    """The real publish, onto a queue of its own in the local Redis."""

    publish: Publish
    queue: str

    def depth(self) -> int:
        import redis

        with redis.Redis.from_url(REDIS_URL) as client:
            return int(client.llen(self.queue))

    def drop(self) -> None:
        import redis

        with redis.Redis.from_url(REDIS_URL) as client:
            client.delete(self.queue, f"_kombu.binding.{self.queue}")


@contextmanager
def _broker() -> Iterator[_Broker]:
    queue = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    saved = {name: os.environ.get(name) for name in ("TRANSCRIBER_BROKER_URL", "TRANSCRIBER_QUEUE")}
    os.environ.update(TRANSCRIBER_BROKER_URL=REDIS_URL, TRANSCRIBER_QUEUE=queue)
    get_settings.cache_clear()
    if "workers.app" in sys.modules:
        # The app reads its settings once, at import: a queue of ours needs a fresh import.
        raise RuntimeError("ingest_rate must run before anything imports workers.app")
    from workers.tasks import publish

    broker = _Broker(publish, queue)
    try:
        yield broker
    finally:
        broker.drop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@contextmanager
def _fake_aws() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in [*FAKE_AWS_ENV, "AWS_PROFILE"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(FAKE_AWS_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- The measurements -----------------------------------------------------------------------


@dataclass
class _Row:
    what: str
    objects: int
    seconds: float
    target: bool = False

    @property
    def rate(self) -> float:
        return self.objects / self.seconds if self.seconds else 0.0

    def markdown(self) -> str:
        verdict = ("meets" if self.rate >= TARGET_PER_S else "MISSES") if self.target else "–"
        return (
            f"| {self.what} | {self.objects:,} | {self.seconds:.1f} s | {self.rate:,.0f}/s "
            f"| {verdict} |"
        )


def _timed_scan(
    settings: Settings, engine: Engine, broker: _Broker, count: int, prefix: str | None = None
) -> float:
    started = time.perf_counter()
    result = scan(s3_client(settings), engine, settings, broker.publish, prefix=prefix)
    seconds = time.perf_counter() - started
    assert result.listed == count, result
    return seconds


@contextmanager
def _versions_denied() -> Iterator[None]:
    """The scan as it runs without ``s3:ListBucketVersions``."""

    def denied(*args: object) -> Iterator[Any]:
        raise StorageAccessDenied("listing versions: AccessDenied (the benchmark's own)")
        yield

    with mock.patch("transcriber.ingest.scan.iter_current_versions", denied):
        yield


def _timed_watcher(settings: Settings, engine: Engine, broker: _Broker, count: int) -> float:
    sqs = sqs_client(settings)
    sqs.purge_queue(QueueUrl=settings.sqs_queue_url)  # the notification's s3:TestEvent
    watcher = Watcher(settings, engine, broker.publish, wait_time_seconds=0)
    sent = registered = 0
    seconds = 0.0
    idle = 0
    while registered < count:
        if sent - registered < 10 and sent < count:
            upto = min(count, sent + BACKLOG)
            for first in range(sent, upto, 10):
                sqs.send_message_batch(
                    QueueUrl=settings.sqs_queue_url,
                    Entries=[
                        {"Id": str(i), "MessageBody": _event_body(settings, i)}
                        for i in range(first, min(upto, first + 10))
                    ],
                )
            sent = upto
        started = time.perf_counter()
        new = watcher.run_once()
        seconds += time.perf_counter() - started
        registered += new
        idle = 0 if new else idle + 1
        if idle > 100:
            raise RuntimeError(f"the watcher stalled at {registered} of {count}")
    return seconds


def _timed_list(settings: Settings) -> tuple[int, float]:
    started = time.perf_counter()
    listed = sum(1 for _ in iter_current_versions(s3_client(settings), settings.s3_bucket))
    return listed, time.perf_counter() - started


def _timed_head(settings: Settings, count: int) -> tuple[int, float]:
    keys = [_key(index) for index in range(min(count, HEAD_SAMPLE))]
    started = time.perf_counter()
    s3 = s3_client(settings)
    # The scan's pool size (its HEADs run in a pool of this size, overlapped with the rest).
    with ThreadPoolExecutor(max_workers=scanning._HEAD_THREADS) as pool:
        found = list(pool.map(lambda key: head(s3, settings.s3_bucket, key), keys))
    seconds = time.perf_counter() - started
    assert all(info is not None for info in found)
    return len(keys), seconds


def _timed_register(
    settings: Settings, engine: Engine, broker: _Broker, count: int
) -> tuple[int, float]:
    """Registration and publishing of the listed facts: the part S3 has no say in."""
    listed = [
        ObjectInfo(
            bucket=settings.s3_bucket,
            key=_key(index),
            version_id="",
            etag=hashlib.md5(_body(index)).hexdigest(),
            size_bytes=len(_body(index)),
            content_type=None,
            last_modified=START,
            metadata_read=False,
        )
        for index in range(count)
    ]
    batch = scanning._SCAN_BATCH
    started = time.perf_counter()
    for first in range(0, len(listed), batch):
        with Session(engine) as session, session.begin():
            job_ids = register(
                session, [(o, None) for o in listed[first : first + batch]], settings
            )
        broker.publish(job_ids)
    return len(listed), time.perf_counter() - started


def _timed_publish(broker: _Broker, count: int) -> float:
    """Publishing alone: ``count`` job ids in the scan's batch size."""
    batch = scanning._SCAN_BATCH
    started = time.perf_counter()
    for first in range(1, count + 1, batch):
        broker.publish(range(first, min(count + 1, first + batch)))
    seconds = time.perf_counter() - started
    if broker.depth() != count:
        raise RuntimeError(f"published {broker.depth()} of {count}")
    broker.drop()
    return seconds


def _check(engine: Engine, broker: _Broker, count: int, what: str) -> None:
    objects = _count(engine, AudioObject)
    queued = _count(engine, TranscriptionJob, status="queued")
    published = broker.depth()
    if not objects == queued == published == count:
        raise RuntimeError(
            f"{what}: {objects} objects, {queued} queued jobs, {published} published; "
            f"expected {count} each"
        )
    broker.drop()


def _budget(scanned: _Row, listing: _Row, registering: _Row, publishing: _Row) -> str:
    """Where a scanned object's time goes, from the parts measured in this run."""

    def ms(row: _Row) -> float:
        return 1000 * row.seconds / row.objects

    return (
        f"Per object, this run: the scan {ms(scanned):.2f} ms; on their own, the listing "
        f"{ms(listing):.2f} ms, registration {ms(registering) - ms(publishing):.2f} ms and "
        f"the Celery publish {ms(publishing):.2f} ms (in the scan the listing overlaps the "
        f"rest). The target allows {1000 / TARGET_PER_S:.2f} ms for all of it."
    )


def run(quick: bool) -> str:
    count = 10_000 if quick else 100_000
    factory = DatabaseFactory(Path(tempfile.mkdtemp(prefix="bench-ingest-")))
    rows: list[_Row] = []
    parts: list[_Row] = []

    def report(row: _Row, into: list[_Row]) -> None:
        into.append(row)
        print(row.markdown(), flush=True)

    started = time.perf_counter()
    with (
        _fake_aws(),
        _broker() as broker,
        _moto_bucket(count) as settings,
        listing_server(free_port(), settings.s3_bucket, count, _object) as endpoint,
    ):
        seeded = time.perf_counter() - started
        print(f"moto bucket of {count:,} objects ready in {seeded:.1f} s", flush=True)
        listing = settings.model_copy(update={"s3_endpoint_url": endpoint})
        engines: list[Engine] = []
        try:
            listed, seconds = _timed_list(listing)
            report(_Row("bare listing of versions, 1,000 a page", listed, seconds), parts)
            heads, seconds = _timed_head(settings, count)
            what = f"bare HEAD on moto, {scanning._HEAD_THREADS} threads"
            report(_Row(what, heads, seconds), parts)

            engines.append(engine := _database(factory))
            seconds = _timed_scan(listing, engine, broker, count)
            _check(engine, broker, count, "scan")
            report(_Row("`scan`, empty database", count, seconds, target=True), rows)
            seconds = _timed_scan(listing, engine, broker, count)
            if broker.depth() or _count(engine, AudioObject) != count:
                raise RuntimeError("the second scan registered or published something")
            report(_Row("`scan` again, everything known", count, seconds), rows)

            engines.append(engine := _database(factory))
            share = sum(1 for i in range(count) if _key(i).startswith(FALLBACK_PREFIX))
            with _versions_denied():
                seconds = _timed_scan(settings, engine, broker, share, FALLBACK_PREFIX)
            _check(engine, broker, share, "fallback scan")
            what = "`scan` without `s3:ListBucketVersions` (HEAD each, moto), one sensor"
            report(_Row(what, share, seconds), rows)

            engines.append(engine := _database(factory))
            events = min(count, WATCHER_EVENTS)
            seconds = _timed_watcher(settings, engine, broker, events)
            _check(engine, broker, events, "watcher")
            report(_Row("watcher, `run_once` rounds (HEAD each, moto)", events, seconds), rows)

            engines.append(engine := _database(factory))
            registered, seconds = _timed_register(settings, engine, broker, count)
            _check(engine, broker, count, "register")
            report(_Row("`register` + publish, no S3", registered, seconds), parts)
            seconds = _timed_publish(broker, count)
            report(_Row("publish alone (`workers.tasks.publish`)", count, seconds), parts)
        finally:
            for engine in engines:
                engine.dispose()
            factory.drop_all()
    total = time.perf_counter() - started
    print(f"ingest_rate took {total:.0f} s", flush=True)
    return "\n".join(
        [
            "## Ingest rate (`transcriber scan` and `transcriber watch`)",
            "",
            f"{count:,} small objects, one in {METADATA_EVERY} with user metadata that "
            "places it; each registered into a freshly migrated PostgreSQL database with its "
            "job, and the job published to Redis with the real Celery publish (the queue's "
            "length is checked). Scan: the listing of versions comes from a stand-in that "
            "answers as S3 does, 1,000 a page (moto's listing slows down with the size of "
            "the bucket, see `tests/bench/listing_server.py`); the scan reads no metadata, "
            "the worker does when it downloads. Without `s3:ListBucketVersions` the scan "
            "HEADs each object instead, on moto. Watcher: the first "
            f"{min(count, WATCHER_EVENTS):,} of the same objects announced by S3 "
            "`ObjectCreated:Put` event notifications in SQS, ten a receive, each object "
            "HEADed on moto, the time of its rounds summed (the queue is topped up between "
            "rounds, outside the timing, because moto's SQS slows down in proportion to its "
            f"backlog). Target: at least {TARGET_PER_S:,.0f} objects/s for the scan.",
            "",
            "| What | Objects | Wall time | Rate | Target |",
            "| --- | ---: | ---: | ---: | --- |",
            *(row.markdown() for row in rows),
            "",
            "The parts on their own, to show where the time goes:",
            "",
            "| Part | Objects | Wall time | Rate | |",
            "| --- | ---: | ---: | ---: | --- |",
            *(row.markdown() for row in parts),
            "",
            "One HEAD per object is what held the scan to a few hundred objects a second "
            "(the fallback row); a listing page brings 1,000 objects in one request.",
            "",
            _budget(rows[0], parts[0], parts[-2], parts[-1]),  # scan, listing, register, publish
            "",
            (
                "**Tried, and kept.** (1) A HEAD per object to read its version id and user "
                "metadata held the scan to the rate of HEADs: 158 objects/s at a tenth of this "
                "size (10,000 objects) during development, and the fallback row above. The "
                "scan now registers from the listing of versions and the worker reads the "
                "metadata when it downloads the object: 728/s at that size. (2) On PostgreSQL, "
                "registration wrote each batch as SQLAlchemy's multi-row INSERT, 500 rows as "
                "6,500 placeholders that psycopg parsed afresh each time (cProfile of "
                "registering 10,000 objects: a third of the time); one statement over unnested "
                "arrays took registration from 1,313 to 2,053 objects/s. (3) `KEY_PATTERN` was "
                "matched by a table over the whole key, about 120 µs a key; segment by "
                "segment, by regex where a segment has at most two fields, 6 µs."
            ),
            "",
            (
                "**What stands in the way: the publish, and the target.** Celery's "
                "`apply_async` alone costs about twice the whole budget per job (the publish "
                "figure above), even with one producer and kombu's pipelined batches. cProfile "
                "puts it in Celery's own message building (`send_task`, `as_task_v2`, kombu's "
                "copies of the exchange and queue, the repr of the arguments), not in Redis. "
                "Fewer messages would mean one task per batch of jobs, and lose one message "
                "per job, which Celery's retries and `celery call` with a job id rely on; "
                "writing Celery's wire format by hand would tie the service to one Celery "
                "version. Registration is the database's work for two rows and their indexes "
                "per object and the lookups of earlier versions. A scan is reconciliation, run "
                "now and then for what events missed; the watcher handles what arrives as it "
                "arrives. The target of 5,000/s assumed a scan without a queue message per "
                "job."
            ),
            "",
            f"The whole benchmark took {total:.0f} s (moto's bucket filled in {seeded:.0f} s).",
            "",
            "Reproduce: `make bench` (this section alone, printed: "
            "`python -m tests.bench.run --only ingest_rate`).",
        ]
    )
