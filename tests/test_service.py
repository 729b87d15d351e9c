"""The whole service: a moto S3 bucket wired to SQS, `transcriber watch`, a real Celery worker
(subprocess) on real Redis, and PostgreSQL. Upload a file; rows appear."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.support.moto import make_bucket
from tests.support.service import DATA, START, Service, event_body, service_fixture
from transcriber.storage import s3_client, sqs_client

service = service_fixture("service")


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


@pytest.mark.fault("P1")
def test_duplicates_make_one_transcript_and_a_new_version_another(service: Service) -> None:
    key = "dups/plant-a/PT-1/20260314T102000Z.wav"
    head = service.upload(key, (DATA / "speech_16k_mono.wav").read_bytes())
    service.wait_for("first version", service.succeeded(key))
    ((job_id, *_rest),) = service.jobs_of(key)
    sqs = sqs_client(service.settings)
    body = event_body(service.settings, key, head, "0055AED6DCD90281E5")
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


@pytest.mark.fault("P5", "P6")
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


@pytest.mark.fault("P5")
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


@pytest.mark.fault("P2")
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


@pytest.mark.fault("P1", "P4")
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
            Bucket=other.s3_bucket,
            Key=key,
            Body=(DATA / "speech_8k_mono.wav").read_bytes(),
            Metadata={"recorded-at": "2026-03-14T10:15:00Z"},
        )
    service.start_worker("bad-worker", env={**env, "TRANSCRIBER_MODEL": "/nonexistent/model"})
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
    service.start_worker("good-worker", env=env)
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
        # The scan listed the object; the worker read its metadata when it downloaded it.
        (audio,) = service.query(
            "SELECT recorded_at_source, metadata FROM audio_objects WHERE key = :key", key=key
        )
        assert audio.recorded_at_source == "metadata"
    service.stop("good-worker")
