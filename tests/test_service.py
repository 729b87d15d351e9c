"""The whole service: a moto S3 bucket wired to SQS, `transcriber watch`, a real Celery worker
(subprocess) on real Redis, and PostgreSQL. Upload a file; rows appear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from sqlalchemy import Engine, text

from tests.conftest import DatabaseFactory
from tests.moto_server import FAKE_AWS_ENV, enable_versioning, make_bucket, moto_server
from transcriber import migrate
from transcriber.config import Settings
from transcriber.db import make_engine
from transcriber.sensors import load_files
from transcriber.storage import s3_client, sqs_client

__all__ = ["moto_server"]  # a fixture, used by name

DATA = Path(__file__).parent / "data"
START = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
TIMEOUT = 120.0


@dataclass
class Service:
    """A running stack; ``env`` is what its processes were started with."""

    settings: Settings
    env: dict[str, str]
    engine: Engine
    workdir: Path
    tmpdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, **overrides: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *args],
            env={**self.env, **overrides},
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_worker(self, name: str = "worker", **overrides: str) -> None:
        queue = overrides.get("TRANSCRIBER_QUEUE", self.env["TRANSCRIBER_QUEUE"])
        self.start(
            name,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-Q",
            queue,
            "-c",
            "1",
            "--pool",
            "prefork",
            "-l",
            "INFO",
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            **overrides,
        )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

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

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in self.workdir.glob("*.log")
        )

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        jobs = self.query("SELECT id, status, attempts, error_category FROM transcription_jobs")
        raise AssertionError(f"timed out waiting for {what}; jobs: {jobs}\n{self.logs()}")

    def upload(self, key: str, body: bytes, **metadata: str) -> dict[str, Any]:
        s3 = s3_client(self.settings)
        s3.put_object(Bucket=self.settings.s3_bucket, Key=key, Body=body, Metadata=metadata)
        return dict(s3.head_object(Bucket=self.settings.s3_bucket, Key=key))

    def jobs_of(self, key: str) -> list[Any]:
        return self.query(
            "SELECT j.id, j.status, j.attempts, j.error_category, a.version_id "
            "FROM transcription_jobs j JOIN audio_objects a ON a.id = j.audio_object_id "
            "WHERE a.key = :key ORDER BY j.id",
            key=key,
        )

    def succeeded(self, key: str, count: int = 1) -> Callable[[], bool]:
        return lambda: sum(1 for j in self.jobs_of(key) if j.status == "succeeded") >= count


def _readings_csv(directory: Path) -> list[Path]:
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


@pytest.fixture(scope="module")
def service(
    moto_server: str,
    redis_server: str,
    postgres_server: str,
    databases: DatabaseFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    url = databases.postgresql(postgres_server)
    migrate.upgrade(url)
    engine = make_engine(url)
    workdir = tmp_path_factory.mktemp("service")
    load_files(engine, _readings_csv(workdir))
    settings = make_bucket(moto_server)
    enable_versioning(settings)
    tmpdir = workdir / "worker-tmp"
    tmpdir.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRANSCRIBER_", "AWS_"))},
        **FAKE_AWS_ENV,
        "TRANSCRIBER_DATABASE_URL": url,
        "TRANSCRIBER_BROKER_URL": redis_server,
        "TRANSCRIBER_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
        "TRANSCRIBER_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "TRANSCRIBER_S3_BUCKET": settings.s3_bucket,
        "TRANSCRIBER_SQS_QUEUE_URL": settings.sqs_queue_url,
        "TRANSCRIBER_TASK_TIME_LIMIT": "300",
        "TRANSCRIBER_SWEEP_INTERVAL_SECONDS": "5",
        "TRANSCRIBER_MODEL_CACHE_DIR": str(workdir / "models"),
        "TMPDIR": str(tmpdir),
    }
    stack = Service(settings, env, engine, workdir, tmpdir)
    stack.start("watch", "-m", "transcriber", "watch", "--wait", "1")
    stack.start_worker()
    try:
        yield stack
    finally:
        for name in list(stack.processes):
            stack.stop(name)
        engine.dispose()


def test_uploads_become_transcripts_joined_to_readings(service: Service) -> None:
    names = [
        "speech_16k_mono.wav",
        "speech_44k_stereo.mp3",
        "speech_48k_mono.ogg",
        "speech_44k_mono.m4a",
        "speech_48k_mono.flac",
    ]
    keys = []
    for n, name in enumerate(names):
        key = f"uploads/{n}-{name}"
        recorded = (START + timedelta(minutes=10 * n)).isoformat()
        service.upload(
            key,
            (DATA / name).read_bytes(),
            facility="plant-a",
            sensor="PT-1",
            **{"recorded-at": recorded},
        )
        keys.append(key)
    for key in keys:
        service.wait_for(f"{key} transcribed", service.succeeded(key), timeout=90)
    rows = service.query(
        "SELECT a.key, count(*) AS n, min(sr.reading_ts) AS first_ts, min(sr.starts_at) AS at "
        "FROM segment_readings sr JOIN audio_objects a ON a.id = sr.audio_object_id "
        "WHERE a.key LIKE 'uploads/%' GROUP BY a.key"
    )
    assert {r.key for r in rows} == set(keys)
    for row in rows:
        assert row.n > 0
        assert row.at - timedelta(minutes=5, seconds=1) <= row.first_ts
    sources = service.query(
        "SELECT DISTINCT recorded_at_source, facility_id IS NOT NULL AS placed FROM audio_objects "
        "WHERE key LIKE 'uploads/%'"
    )
    assert [(s.recorded_at_source, s.placed) for s in sources] == [("metadata", True)]


def _event_body(settings: Settings, key: str, head: dict[str, Any], sequencer: str) -> str:
    from urllib.parse import quote_plus

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


def test_duplicates_make_one_transcript_and_a_new_version_another(service: Service) -> None:
    key = "dups/plant-a/PT-1/20260314T102000Z.wav"
    head = service.upload(key, (DATA / "speech_16k_mono.wav").read_bytes())
    service.wait_for("first version", service.succeeded(key))
    ((job_id, *_rest),) = service.jobs_of(key)
    sqs = sqs_client(service.settings)
    body = _event_body(service.settings, key, head, "0055AED6DCD90281E5")
    for _ in range(2):  # the same event twice more
        sqs.send_message(QueueUrl=service.settings.sqs_queue_url, MessageBody=body)
    assert service.run("-m", "transcriber", "scan").returncode == 0
    call = service.run(
        "-m",
        "celery",
        "-A",
        "workers",
        "call",
        "workers.tasks.transcribe",
        "-a",
        json.dumps([str(job_id)]),
    )
    assert call.returncode == 0, call.stderr
    time.sleep(8)  # give the duplicates every chance to do harm
    assert len(service.jobs_of(key)) == 1
    assert (
        service.query("SELECT count(*) AS n FROM transcripts WHERE job_id = :j", j=job_id)[0].n == 1
    )

    service.upload(key, (DATA / "speech_44k_stereo.mp3").read_bytes())  # a new version
    service.wait_for("second version", service.succeeded(key, 2))
    versions = service.jobs_of(key)
    assert len({v.version_id for v in versions}) == 2
    latest = service.query(
        "SELECT lt.text, lt.version_id FROM latest_transcripts lt WHERE lt.key = :key", key=key
    )
    assert len(latest) == 1
    assert latest[0].version_id == versions[-1].version_id
    assert "pump" in latest[0].text.lower()


def test_hostile_keys_are_ingested_and_nothing_escapes_the_temp_dir(service: Service) -> None:
    keys = [
        "odd/a key with spaces.wav",
        "odd/ünïcødé-日本語.flac",
        "odd/../../escape/../../etc/evil.ogg",
    ]
    files = ["speech_16k_mono.wav", "speech_48k_mono.flac", "speech_48k_mono.ogg"]
    for key, name in zip(keys, files, strict=True):
        service.upload(key, (DATA / name).read_bytes())
    for key in keys:
        service.wait_for(f"{key!r} transcribed", service.succeeded(key))
    # Every job's scratch directory is gone, and no file was ever named after a key.
    assert [p for p in service.tmpdir.iterdir() if p.name.startswith("transcriber-job-")] == []
    basenames = {Path(key).name for key in keys}
    for root in (service.workdir, service.tmpdir.parent.parent):
        assert not [p for p in root.rglob("*") if p.name in basenames]
    assert not Path("/etc/evil.ogg").exists()
    stored = {r.key for r in service.query("SELECT key FROM audio_objects WHERE key LIKE 'odd/%'")}
    assert stored == set(keys)


def test_garbage_fails_after_one_attempt_and_is_listed(service: Service) -> None:
    key = "junk/garbage.wav"
    service.upload(key, os.urandom(8192))
    service.wait_for(
        "the garbage job to fail", lambda: any(j.status == "failed" for j in service.jobs_of(key))
    )
    (job,) = service.jobs_of(key)
    assert (job.attempts, job.error_category) == (1, "unsupported")
    listed = service.run(
        "-m", "celery", "-A", "workers", "transcriber", "jobs", "--status", "failed"
    )
    assert listed.returncode == 0, listed.stderr
    assert key in listed.stdout
    assert "unsupported" in listed.stdout
    status = service.run("-m", "celery", "-A", "workers", "transcriber", "status")
    assert status.returncode == 0, status.stderr
    counts = dict(line.split()[:2] for line in status.stdout.splitlines() if line.split())
    assert int(counts["failed"]) >= 1
    assert counts["queue"].isdigit()  # the broker answered with the queue's depth


def test_kill_9_of_the_worker_child_runs_the_job_again_once(
    service: Service, tmp_path: Path
) -> None:
    speech, rate = soundfile.read(DATA / "speech_16k_mono.wav", dtype="float32")
    long_audio = tmp_path / "long.wav"
    soundfile.write(long_audio, np.concatenate([speech] * 15), rate)  # about 50 s
    key = "kill/plant-a/PT-1/20260314T103000Z.wav"
    service.upload(key, long_audio.read_bytes())
    owner: list[str] = []

    def running() -> bool:
        found = service.query(
            "SELECT j.lease_owner FROM transcription_jobs j JOIN audio_objects a "
            "ON a.id = j.audio_object_id WHERE a.key = :key AND j.status = 'running'",
            key=key,
        )
        owner.extend(r.lease_owner for r in found)
        return bool(found)

    service.wait_for("the long job to start", running)
    time.sleep(1.0)  # let it get into decoding and transcribing
    os.kill(int(owner[0].split("/")[1]), signal.SIGKILL)
    service.wait_for("the job to succeed after the kill", service.succeeded(key))
    (job,) = service.jobs_of(key)
    assert job.attempts == 2
    count = service.query("SELECT count(*) AS n FROM transcripts WHERE job_id = :j", j=job.id)
    assert count[0].n == 1


def test_bad_deploy_then_retry_failed_brings_every_job_back(service: Service) -> None:
    # A bucket and queue of its own that no watcher reads: jobs come from `transcriber scan`.
    other = make_bucket(service.settings.s3_endpoint_url)
    queue = f"deploy-{uuid.uuid4().hex[:8]}"
    env = {
        "TRANSCRIBER_S3_BUCKET": other.s3_bucket,
        "TRANSCRIBER_SQS_QUEUE_URL": other.sqs_queue_url,
        "TRANSCRIBER_QUEUE": queue,
    }
    keys = [f"deploy/{n}.wav" for n in range(3)]
    s3 = s3_client(other)
    for key in keys:
        s3.put_object(
            Bucket=other.s3_bucket, Key=key, Body=(DATA / "speech_8k_mono.wav").read_bytes()
        )
    service.start_worker("bad-worker", TRANSCRIBER_MODEL="/nonexistent/model", **env)
    assert service.run("-m", "transcriber", "scan", **env).returncode == 0
    for key in keys:
        service.wait_for(
            f"{key} to fail",
            lambda key=key: any(  # type: ignore[misc]
                j.status == "failed" for j in service.jobs_of(key)
            ),
        )
        assert service.jobs_of(key)[0].error_category == "model_unavailable"
    service.stop("bad-worker")
    service.start_worker("good-worker", **env)
    done = service.run(
        "-m",
        "celery",
        "-A",
        "workers",
        "transcriber",
        "retry",
        "--failed",
        "--error-category",
        "model_unavailable",
        **env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("queued again") >= 3
    for key in keys:
        service.wait_for(f"{key} to succeed", service.succeeded(key))
        (job,) = service.jobs_of(key)
        count = service.query("SELECT count(*) AS n FROM transcripts WHERE job_id = :j", j=job.id)
        assert count[0].n == 1
    service.stop("good-worker")
