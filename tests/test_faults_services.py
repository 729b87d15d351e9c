"""Service faults and races: Redis restarted, PostgreSQL and SQS unreachable, events lost,
duplicated and out of order, and scans racing the watcher.

The stack runs on a Redis of its own (to restart it), its processes reach PostgreSQL through
a TCP relay (to cut it), and its watcher reaches S3 and SQS through another (to cut those).
The tests' own checks read the database directly. The sweeper runs every 3 s and publishes
queued jobs again after 10 s, so that what it recovers is recovered within a test's patience.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import DatabaseFactory
from tests.support.service import (
    DATA,
    RedisProcess,
    Service,
    TcpProxy,
    event_body,
    running_service,
)
from transcriber.storage import sqs_client

CLIP_A = (DATA / "speech_8k_mono.wav").read_bytes()  # "Pressure on line four is rising..."
CLIP_B = (DATA / "speech_44k_stereo.mp3").read_bytes()  # "The cooling pump is running hot..."


@dataclass
class Faults:
    service: Service
    broker: RedisProcess
    database: TcpProxy  # every process of the stack reaches PostgreSQL through this
    storage: TcpProxy  # the watcher reaches S3 and SQS through this

    def start_watcher(self) -> None:
        self.service.start_watcher(
            TRANSCRIBER_S3_ENDPOINT_URL=f"http://127.0.0.1:{self.storage.port}"
        )

    def upload_many(self, keys: list[str], body: bytes) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda key: self.service.upload(key, body), keys))

    def log(self, name: str) -> str:
        return (self.service.workdir / f"{name}.log").read_text(errors="replace")

    def check_one_transcript_each(self, keys: list[str]) -> int:
        """Every key has one job, succeeded with one transcript; the most attempts any took."""
        rows = self.service.query(
            "SELECT a.key, j.status, j.attempts, "
            "(SELECT count(*) FROM transcripts t WHERE t.job_id = j.id) AS transcripts "
            "FROM audio_objects a JOIN transcription_jobs j ON j.audio_object_id = a.id "
            "WHERE a.key = ANY(:keys)",
            keys=keys,
        )
        assert sorted(r.key for r in rows) == sorted(keys)  # one job per key: none doubled
        assert {(r.status, r.transcripts) for r in rows} == {("succeeded", 1)}
        assert self.service.integrity_problems() == []
        return max(int(r.attempts) for r in rows)


@pytest.fixture(scope="module")
def faults(
    moto_server: str,
    postgres_server: str,
    databases: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Faults]:
    url = databases.postgresql(postgres_server)
    broker = RedisProcess(tmp_path_factory.mktemp("redis"))
    broker.start()
    moto_port = urlsplit(moto_server).port
    assert moto_port is not None
    with TcpProxy(make_url(url).port or 5432) as database, TcpProxy(moto_port) as storage:
        proxied = make_url(url).set(host="127.0.0.1", port=database.port)
        with running_service(
            moto_endpoint=moto_server,
            broker_url=broker.url,
            database_url=url,
            workdir=tmp_path_factory.mktemp("service-faults"),
            watcher=False,
            TRANSCRIBER_DATABASE_URL=proxied.render_as_string(hide_password=False),
            TRANSCRIBER_REQUEUE_AFTER_SECONDS="10",
            TRANSCRIBER_SWEEP_INTERVAL_SECONDS="3",
            # Small packs keep a batch in flight long enough for a fault to land mid-batch:
            # with 32 a claim could take every job left and none would wait to be recovered.
            TRANSCRIBER_PACK_MAX_CLIPS="8",
        ) as service:
            faults = Faults(service, broker, database, storage)
            faults.start_watcher()
            yield faults
    broker.stop()


def _drop_events(service: Service) -> None:
    """Read and delete every event in the queue: they are lost. (SQS allows one PurgeQueue a
    minute.)"""
    sqs = sqs_client(service.settings)
    queue = service.settings.sqs_queue_url
    while messages := sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.mark.fault("P3")
def test_the_scan_finds_objects_whose_events_were_lost(
    faults: Faults, figures: dict[str, Any]
) -> None:
    """Uploads whose notifications never reach the watcher (the queue purged while it was
    down) are found by `transcriber scan` and transcribed once; a second scan adds nothing."""
    service = faults.service
    service.stop("watch")
    keys = [f"lost/plant-a/PT-1/20260314T10{n}000Z.wav" for n in range(3)]
    faults.upload_many(keys, CLIP_A)
    _drop_events(service)
    faults.start_watcher()
    time.sleep(5)
    assert service.query("SELECT id FROM audio_objects WHERE key LIKE 'lost/%'") == []
    first = service.run("-m", "transcriber", "scan", "--prefix", "lost/")
    assert first.returncode == 0, first.stderr
    assert "registered 3 new" in first.stderr
    for key in keys:
        service.wait_for(f"{key} to succeed", service.succeeded(key))
    again = service.run("-m", "transcriber", "scan", "--prefix", "lost/")
    assert "registered 0 new" in again.stderr
    faults.check_one_transcript_each(keys)
    figures["uploads with lost events"] = len(keys)
    figures["found by the scan"] = 3


@pytest.mark.fault("P1")
def test_duplicate_and_out_of_order_events_give_one_job_per_version(
    faults: Faults, figures: dict[str, Any]
) -> None:
    """Two versions of a key, their events delivered newest first and each twice: the newer
    version is transcribed once, the older one is recorded as superseded and never run, and
    `latest_transcripts` shows the newer one."""
    service = faults.service
    service.stop("watch")
    key = "order/plant-a/PT-1/20260314T103000Z.wav"
    old = service.upload(key, CLIP_A)
    new = service.upload(key, CLIP_B)
    _drop_events(service)  # moto gives every event the same sequencer; send real-like ones
    sqs = sqs_client(service.settings)
    for head, sequencer in [(new, "0055AED6DCD90281E6"), (old, "0055AED6DCD90281E5")] * 2:
        sqs.send_message(
            QueueUrl=service.settings.sqs_queue_url,
            MessageBody=event_body(service.settings, key, head, sequencer),
        )
    faults.start_watcher()
    service.wait_for("the newer version", service.succeeded(key))
    time.sleep(3)  # every duplicate has been read by now
    jobs = {j.version_id: j for j in service.jobs_of(key)}
    assert set(jobs) == {old["VersionId"], new["VersionId"]}
    assert (jobs[new["VersionId"]].status, jobs[new["VersionId"]].attempts) == ("succeeded", 1)
    assert (jobs[old["VersionId"]].status, jobs[old["VersionId"]].attempts) == ("superseded", 0)
    (latest,) = service.query(
        "SELECT version_id, text FROM latest_transcripts WHERE key = :k", k=key
    )
    assert latest.version_id == new["VersionId"]
    assert "pump" in latest.text.lower()
    assert service.integrity_problems() == []
    figures["events delivered"] = 4
    figures["jobs run"] = 1


@pytest.mark.fault("P1")
def test_scans_racing_the_watcher_register_each_upload_once(
    faults: Faults, figures: dict[str, Any]
) -> None:
    """Two `transcriber scan` loops run while 20 uploads arrive through the watcher:
    every object version gets exactly one job and one transcript."""
    service = faults.service
    keys = [f"race/plant-a/TT-1/20260314T10{n:02d}00Z.wav" for n in range(20)]
    stop = threading.Event()
    scans: list[int] = []

    def scan_until_stopped() -> None:
        while not stop.is_set():
            done = service.run("-m", "transcriber", "scan", "--prefix", "race/")
            scans.append(done.returncode)

    loops = [threading.Thread(target=scan_until_stopped) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        faults.upload_many(keys, CLIP_A)
        for key in keys:
            service.wait_for(f"{key} to succeed", service.succeeded(key), timeout=240)
    finally:
        stop.set()
        for loop in loops:
            loop.join()
    assert scans
    assert set(scans) == {0}
    faults.check_one_transcript_each(keys)
    figures["uploads"] = len(keys)
    figures["concurrent scans run"] = len(scans)


@pytest.mark.fault("P3")
def test_sqs_unreachable_the_watcher_backs_off_and_recovers(
    faults: Faults, figures: dict[str, Any]
) -> None:
    """S3 and SQS cut off from the watcher for 15 s while five files arrive: it logs its
    failed rounds with growing pauses, and once they answer again it registers all five."""
    service = faults.service
    keys = [f"sqs/plant-a/PT-1/20260314T11{n}000Z.wav" for n in range(5)]
    before = faults.log("watch").count("watch round failed")
    faults.storage.cut()
    try:
        faults.upload_many(keys, CLIP_A)
        time.sleep(15)
    finally:
        faults.storage.restore()
    restored = time.monotonic()
    for key in keys:
        service.wait_for(f"{key} to succeed", service.succeeded(key))
    recovered_in = time.monotonic() - restored
    log = faults.log("watch")
    failed_rounds = log.count("watch round failed") - before
    assert failed_rounds >= 2
    assert "watch recovered after" in log
    faults.check_one_transcript_each(keys)
    figures["outage (s)"] = 15
    figures["failed watcher rounds"] = failed_rounds
    figures["restore to all transcribed (s)"] = round(recovered_in, 1)


@pytest.mark.fault("P3")
def test_postgresql_unreachable_for_30_s_mid_batch_jobs_retry_and_succeed(
    faults: Faults, figures: dict[str, Any]
) -> None:
    """PostgreSQL cut off from every process for 30 s while a batch of 12 is transcribed:
    running jobs lose their database, tasks retry, leases lapse, and after the outage the
    sweeper and the retries bring every job to one transcript."""
    service = faults.service
    keys = [f"pg/plant-a/PT-1/20260314T12{n:02d}00Z.wav" for n in range(12)]
    faults.upload_many(keys, CLIP_A)
    service.wait_for("a job of the batch to run", service.running("pg/"), timeout=180)
    faults.database.cut()
    time.sleep(30)
    faults.database.restore()
    restored = time.monotonic()
    for key in keys:
        service.wait_for(f"{key} to succeed", service.succeeded(key), timeout=240)
    recovered_in = time.monotonic() - restored
    most_attempts = faults.check_one_transcript_each(keys)
    # The outage was felt where it matters: a worker lost its database mid-work.
    assert "database" in faults.log("worker")
    figures["outage (s)"] = 30
    figures["jobs"] = len(keys)
    figures["most attempts of a job"] = most_attempts
    figures["restore to all transcribed (s)"] = round(recovered_in, 1)


@pytest.mark.fault("P1", "P3")
def test_redis_restarted_during_a_batch_of_50_uploads_all_succeed_once(
    faults: Faults, figures: dict[str, Any]
) -> None:
    """Redis killed (its queue lost: no persistence) and started again while 50 uploads are
    in flight: the worker reconnects, the sweeper publishes the lost jobs again, and all 50
    succeed with one transcript each."""
    service = faults.service
    keys = [f"redis/plant-a/PT-1/20260314T13{n:02d}00Z.wav" for n in range(50)]
    started = time.monotonic()
    faults.upload_many(keys, CLIP_A)
    service.wait_for("ten to finish", service.finished("redis/", 10), timeout=240)
    faults.broker.stop()
    time.sleep(3)
    faults.broker.start()
    restarted = time.monotonic()
    service.wait_for("all 50 to finish", service.finished("redis/", 50), timeout=400)
    most_attempts = faults.check_one_transcript_each(keys)
    log = faults.log("watch")
    assert "sweeper published" in log
    figures["uploads"] = len(keys)
    figures["restart to all transcribed (s)"] = round(time.monotonic() - restarted, 1)
    figures["batch wall time (s)"] = round(time.monotonic() - started, 1)
    figures["most attempts of a job"] = most_attempts
