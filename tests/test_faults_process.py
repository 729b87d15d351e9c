"""Process faults: workers killed, stopped and racing, and a file that kills its decoder.

The stack here has no watcher, so no sweeper either: every job that comes back after a fault
came back through the broker (acks late, reject on worker lost, the visibility timeout) and
the database lease, which is what these tests prove. Jobs are registered and published by
``transcriber scan``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import soundfile

from tests.support.poison_worker import POISON
from tests.support.service import DATA, Service, service_fixture

ROOT = Path(__file__).parents[1]
TIME_LIMIT = 60
VISIBILITY_TIMEOUT = 65


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 26 s of speech: a few seconds of work for tiny.en, long enough to be hit."""
    speech, rate = soundfile.read(DATA / "speech_16k_mono.wav", dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "long.wav"
    soundfile.write(path, np.concatenate([speech] * 8), rate)
    return path.read_bytes()


# A Redis of its own: a worker restores every unacknowledged message of its Redis database
# older than its own (short) visibility timeout, other tests' included.
service = service_fixture(
    "process-faults",
    own_broker=True,
    watcher=False,
    worker=False,
    TRANSCRIBER_TASK_TIME_LIMIT=str(TIME_LIMIT),
    TRANSCRIBER_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
    TRANSCRIBER_MAX_ATTEMPTS="3",
    PYTHONPATH=str(ROOT),  # for tests.support.poison_worker
)


def _scan(service: Service, prefix: str) -> None:
    done = service.run("-m", "transcriber", "scan", "--prefix", prefix)
    assert done.returncode == 0, done.stderr


def _wait_running(service: Service, key: str) -> str:
    """Wait until the job of ``key`` runs; its lease owner (``host/pid/token``)."""
    owner: list[str] = []

    def running() -> bool:
        owner.extend(j.lease_owner for j in _leases(service, key) if j.status == "running")
        return bool(owner)

    service.wait_for(f"{key} to start", running)
    return owner[0]


def _leases(service: Service, key: str) -> list[Any]:
    return service.query(
        "SELECT j.status, j.lease_owner FROM transcription_jobs j JOIN audio_objects a "
        "ON a.id = j.audio_object_id WHERE a.key = :key",
        key=key,
    )


def _transcripts(service: Service, job_id: int) -> int:
    (row,) = service.query("SELECT count(*) AS n FROM transcripts WHERE job_id = :j", j=job_id)
    return int(row.n)


@pytest.mark.fault("P2")
def test_kill_9_of_the_whole_worker_mid_job_brings_the_job_back_after_the_visibility_timeout(
    service: Service, long_audio: bytes, figures: dict[str, Any]
) -> None:
    """`kill -9` of the worker's main process and its child at once (a host that died)
    mid-job; a new worker gets the message again from Redis once the visibility timeout
    passes and takes over the dead worker's lease: one transcript, two attempts."""
    key = "whole/plant-a/PT-1/20260314T101000Z.wav"
    service.upload(key, long_audio)
    service.start_worker()
    _scan(service, "whole/")
    _wait_running(service, key)
    time.sleep(1.0)  # into decoding and transcribing
    killed_at = time.monotonic()
    service.kill("worker")
    service.start_worker()
    service.wait_for("the job to come back and succeed", service.succeeded(key), timeout=120)
    back_after = time.monotonic() - killed_at
    ((job_id, _status, attempts, *_rest),) = service.jobs_of(key)
    assert attempts == 2
    assert _transcripts(service, job_id) == 1
    # It came back through the broker's visibility timeout, not sooner (nothing else
    # republishes here) and not much later (the app has kombu look every 10 s).
    assert VISIBILITY_TIMEOUT - 2 <= back_after <= VISIBILITY_TIMEOUT + 10 + TIME_LIMIT
    figures["visibility timeout (s)"] = VISIBILITY_TIMEOUT
    figures["kill to success (s)"] = round(back_after, 1)
    figures["attempts"] = attempts
    service.stop("worker")


@pytest.mark.fault("P2")
def test_sigterm_mid_job_lets_the_job_finish_before_the_worker_exits(
    service: Service, long_audio: bytes, figures: dict[str, Any]
) -> None:
    """SIGTERM to the worker mid-job (a deploy): Celery's warm shutdown finishes the job,
    which succeeds on its first attempt, and the worker exits cleanly."""
    key = "term/plant-a/PT-1/20260314T102000Z.wav"
    service.upload(key, long_audio)
    service.start_worker()
    _scan(service, "term/")
    _wait_running(service, key)
    time.sleep(1.0)
    stopped_at = time.monotonic()
    code = service.stop("worker", timeout=TIME_LIMIT + 30)
    figures["SIGTERM to exit (s)"] = round(time.monotonic() - stopped_at, 1)
    assert code == 0, service.logs()
    ((job_id, status, attempts, *_rest),) = service.jobs_of(key)
    assert (status, attempts) == ("succeeded", 1)
    assert _transcripts(service, job_id) == 1
    figures["attempts"] = attempts


@pytest.mark.fault("P4")
def test_a_file_that_kills_its_decoder_fails_after_max_attempts_and_the_queue_drains(
    service: Service, figures: dict[str, Any]
) -> None:
    """A file whose decoding kills the worker process every time (a test hook simulates the
    crash) fails after MAX_ATTEMPTS attempts with `max_attempts`, naming the lost worker;
    the good files queued behind it all succeed and the queue ends empty."""
    poison = "poison/plant-a/PT-1/20260314T103000Z.wav"
    good = [f"poison/plant-a/TT-1/20260314T10{n}500Z.wav" for n in range(3)]
    service.upload(poison, POISON + (DATA / "speech_16k_mono.wav").read_bytes())
    for key in good:
        service.upload(key, (DATA / "speech_8k_mono.wav").read_bytes())
    service.start_worker("poisoned", app="tests.support.poison_worker")
    started = time.monotonic()
    _scan(service, "poison/")
    service.wait_for("the poison file to fail", service.finished(poison, 1))
    for key in good:
        service.wait_for(f"{key} to succeed", service.succeeded(key))
    ((_id, status, attempts, category, message, _version),) = service.jobs_of(poison)
    assert (status, category) == ("failed", "max_attempts")
    assert attempts == 4  # three that died, and the one that gave up without running
    assert message.startswith("gave up after 3 attempts; last error: attempt 3 ended")
    assert "died" in message
    for key in good:
        # Once more if it shared a packed run with the poison file's first attempt.
        assert [j.attempts for j in service.jobs_of(key)] in ([1], [2])
    broker = redis.Redis.from_url(service.env["TRANSCRIBER_BROKER_URL"])
    service.wait_for(
        "the queue to drain", lambda: broker.llen(service.env["TRANSCRIBER_QUEUE"]) == 0
    )
    assert "WorkerLostError" in (service.workdir / "poisoned.log").read_text()
    figures["attempts that killed the worker"] = 3
    figures["good files behind it that succeeded"] = len(good)
    figures["poison to failed (s)"] = round(time.monotonic() - started, 1)
    service.stop("poisoned")


@pytest.mark.fault("P1")
def test_two_workers_racing_for_one_job_run_it_once(
    service: Service, long_audio: bytes, figures: dict[str, Any]
) -> None:
    """The same job id published six times to two workers: the lease lets exactly one run
    it; the others see it leased or done and drop their copies."""
    key = "race/plant-a/PT-1/20260314T104000Z.wav"
    service.upload(key, long_audio)
    _scan(service, "race/")  # registers and publishes once; no worker consumes it yet
    ((job_id, *_rest),) = service.jobs_of(key)
    published = service.run("-c", f"from workers.tasks import publish; publish([{job_id}] * 5)")
    assert published.returncode == 0, published.stderr
    for name in ("racer-a", "racer-b"):
        service.start_worker(name)
    service.wait_for("the job to succeed", service.succeeded(key))
    broker = redis.Redis.from_url(service.env["TRANSCRIBER_BROKER_URL"])
    service.wait_for(
        "every copy to be consumed", lambda: broker.llen(service.env["TRANSCRIBER_QUEUE"]) == 0
    )
    time.sleep(2)  # the last copies are being dropped
    for name in ("racer-a", "racer-b"):
        service.stop(name)
    ((_id, status, attempts, *_rest),) = service.jobs_of(key)
    assert (status, attempts) == ("succeeded", 1)
    assert _transcripts(service, job_id) == 1
    logs = {name: (service.workdir / f"{name}.log").read_text() for name in ("racer-a", "racer-b")}
    ran = [name for name, log in logs.items() if f"job {job_id}: attempt 1" in log]
    dropped = sum(log.count(f"job {job_id}: not ours to run") for log in logs.values())
    assert len(ran) == 1
    assert dropped == 5
    figures["copies published"] = 6
    figures["copies run"] = 1
    figures["copies dropped by the lease"] = dropped
