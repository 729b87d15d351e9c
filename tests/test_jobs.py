"""The job state machine: leases, attempts, retries and the sweeper, on both databases."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from tests.support.databases import create_job
from transcriber import jobs
from transcriber.config import Settings
from transcriber.errors import LeaseLost
from transcriber.schema import AudioObject, TranscriptionJob

SETTINGS = Settings(max_attempts=3, requeue_after_seconds=600)
HOST = socket.gethostname()
# Owners on this host whose process is alive (pid 1 always is), as two workers would be.
ALICE = f"{HOST}/1/alice"
BOB = f"{HOST}/1/bob"


def _job(engine: Engine) -> int:
    return create_job(engine, datetime(2026, 1, 1, tzinfo=UTC))


def _get(engine: Engine, job_id: int) -> TranscriptionJob:
    with Session(engine) as session:
        return session.get_one(TranscriptionJob, job_id)


def _set(engine: Engine, job_id: int, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(update(TranscriptionJob).where(TranscriptionJob.id == job_id).values(**values))


@pytest.mark.fault("P1", "P2")
def test_only_one_worker_gets_the_lease(db: Engine) -> None:
    job_id = _job(db)
    lease = jobs.acquire(db, job_id, ALICE, SETTINGS)
    assert lease is not None
    assert lease.attempt == 1
    assert jobs.acquire(db, job_id, BOB, SETTINGS) is None
    job = _get(db, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("running", ALICE, 1)
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > datetime.now(UTC) + timedelta(seconds=jobs.LEASE_SECONDS - 5)


def test_a_finished_job_is_never_run_again(db: Engine) -> None:
    job_id = _job(db)
    lease = jobs.acquire(db, job_id, ALICE, SETTINGS)
    assert lease is not None
    with Session(db) as session, session.begin():
        jobs.succeed(session, lease)
    job = _get(db, job_id)
    assert (job.status, job.lease_owner, job.error_category) == ("succeeded", None, None)
    assert job.finished_at is not None
    assert jobs.acquire(db, job_id, BOB, SETTINGS) is None


@pytest.mark.fault("P1", "P2")
def test_an_expired_lease_passes_on_and_the_old_holder_cannot_finish(db: Engine) -> None:
    job_id = _job(db)
    old = jobs.acquire(db, job_id, ALICE, SETTINGS)
    assert old is not None
    _set(db, job_id, lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    new = jobs.acquire(db, job_id, BOB, SETTINGS)
    assert new is not None
    assert new.attempt == 2
    try:
        with Session(db) as session, session.begin():
            jobs.succeed(session, old)
    except LeaseLost:
        pass
    else:
        raise AssertionError("a lost lease must not let the old holder finish the job")
    jobs.fail(db, old, "corrupt", "late")  # a no-op: names the old owner
    assert _get(db, job_id).status == "running"
    assert _get(db, job_id).lease_owner == BOB


@pytest.mark.fault("P1", "P2")
def test_a_dead_holder_on_this_host_is_taken_over_at_once(db: Engine) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    job_id = _job(db)
    _set(
        db,
        job_id,
        status="running",
        attempts=1,
        lease_owner=f"{HOST}/{dead.pid}/gone",
        lease_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    lease = jobs.acquire(db, job_id, BOB, SETTINGS)
    assert lease is not None
    assert lease.attempt == 2
    job = _get(db, job_id)
    assert job.error_category == "worker_lost"
    assert job.error_message == (
        f"attempt 1 ended without a result: its worker ({HOST}/{dead.pid}/gone) died or "
        "overran its lease"
    )
    # A holder on another host is trusted until its lease expires.
    other = _job(db)
    _set(
        db,
        other,
        status="running",
        lease_owner=f"elsewhere/{dead.pid}/x",
        lease_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    assert jobs.acquire(db, other, BOB, SETTINGS) is None


def test_too_many_attempts_fail_the_job_with_the_last_error(db: Engine) -> None:
    job_id = _job(db)
    _set(db, job_id, attempts=3, error_message="worker died")
    assert jobs.acquire(db, job_id, ALICE, SETTINGS) is None
    job = _get(db, job_id)
    assert (job.status, job.error_category) == ("failed", "max_attempts")
    assert job.error_message == "gave up after 3 attempts; last error: worker died"


def test_release_puts_a_job_back_for_the_next_attempt(db: Engine) -> None:
    job_id = _job(db)
    lease = jobs.acquire(db, job_id, ALICE, SETTINGS)
    assert lease is not None
    jobs.release(db, lease, "storage", "S3 timed out")
    job = _get(db, job_id)
    assert (job.status, job.lease_owner, job.error_category) == ("queued", None, "storage")
    again = jobs.acquire(db, job_id, BOB, SETTINGS)
    assert again is not None
    assert again.attempt == 2


def test_retry_requeues_failed_jobs_and_leaves_succeeded_ones(db: Engine) -> None:
    failed_old, failed_new, failed_other, done = (_job(db) for _ in range(4))
    long_ago = datetime.now(UTC) - timedelta(days=2)
    _set(
        db,
        failed_old,
        status="failed",
        attempts=3,
        error_category="model_unavailable",
        finished_at=long_ago,
    )
    _set(
        db,
        failed_new,
        status="failed",
        attempts=1,
        error_category="model_unavailable",
        finished_at=datetime.now(UTC),
    )
    _set(
        db,
        failed_other,
        status="failed",
        attempts=1,
        error_category="corrupt",
        finished_at=datetime.now(UTC),
    )
    _set(db, done, status="succeeded")

    since = datetime.now(UTC) - timedelta(days=1)
    result = jobs.retry(db, failed=True, category="model_unavailable", since=since)
    assert result.requeued == [failed_new]
    result = jobs.retry(db, [failed_old, done, 999_999])
    assert result.requeued == [failed_old]
    assert result.skipped == [(done, "already succeeded; nothing to do"), (999_999, "no such job")]
    job = _get(db, failed_old)
    assert (job.status, job.attempts, job.error_category) == ("queued", 0, None)
    assert _get(db, done).status == "succeeded"
    assert jobs.retry(db, failed=True).requeued == [failed_other]


def test_sweeper_publishes_lost_jobs_once(db: Engine) -> None:
    stuck, fresh, abandoned, alive, orphan = (_job(db) for _ in range(5))
    dead = subprocess.Popen(["true"])
    dead.wait()
    # Held by a process of this host that died: its lease has not expired, but the broker
    # may have lost its message (a restart without persistence), so it is published now.
    _set(
        db,
        orphan,
        status="running",
        lease_owner=f"{HOST}/{dead.pid}/gone",
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )
    _set(db, stuck, queued_at=datetime.now(UTC) - timedelta(hours=1))
    _set(
        db,
        abandoned,
        status="running",
        lease_owner=ALICE,
        lease_expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    _set(
        db,
        alive,
        status="running",
        lease_owner=ALICE,
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )
    published: list[int] = []
    lost = sorted([stuck, abandoned, orphan])
    assert sorted(jobs.sweep(db, SETTINGS, published.extend)) == lost
    assert sorted(published) == lost
    # The queued one's clock restarted; the abandoned ones are published until someone takes
    # them.
    assert sorted(jobs.sweep(db, SETTINGS, published.extend)) == sorted([abandoned, orphan])
    assert fresh not in published


def test_status_counts_and_oldest_queued(db: Engine) -> None:
    first, second = _job(db), _job(db)
    when = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    _set(db, first, queued_at=when)
    _set(db, second, status="failed")
    summary = jobs.status(db)
    assert summary.counts == {
        "queued": 1,
        "running": 0,
        "succeeded": 0,
        "failed": 1,
        "superseded": 0,
    }
    assert summary.oldest_queued_at == when
    listed = jobs.list_jobs(db, "failed")
    assert [j.id for j in listed] == [second]


def test_a_lease_is_renewed_while_the_job_runs_and_stops_when_lost(db: Engine) -> None:
    job_id = _job(db)
    lease = jobs.acquire(db, job_id, ALICE, SETTINGS)
    assert lease is not None
    _set(db, job_id, lease_expires_at=datetime.now(UTC) + timedelta(seconds=1))
    with jobs.keep_lease(db, lease, every_s=0.05) as lost:
        time.sleep(0.3)
        renewed = _get(db, job_id).lease_expires_at
        assert renewed is not None
        assert renewed > datetime.now(UTC) + timedelta(seconds=jobs.LEASE_SECONDS - 5)
        assert not lost.is_set()
        # Another worker takes the job over: the keeper notices and stops renewing.
        _set(db, job_id, lease_owner=BOB)
        assert lost.wait(5)
    assert _get(db, job_id).lease_owner == BOB
    assert not jobs.renew(db, lease)


@pytest.mark.fault("P1")
def test_workers_racing_for_one_job_at_the_same_instant_give_it_to_one(db: Engine) -> None:
    job_id = _job(db)
    start = threading.Barrier(8)

    def race(name: str) -> jobs.Lease | None:
        start.wait()
        return jobs.acquire(db, job_id, f"{HOST}/1/{name}", SETTINGS)

    with ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(race, [f"worker{n}" for n in range(8)]))
    winners = [lease for lease in leases if lease is not None]
    assert len(winners) == 1
    job = _get(db, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("running", 1, winners[0].owner)


def test_sweeper_publishes_the_longest_waiting_first_a_batch_at_a_time(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "SWEEP_BATCH", 3)
    waiting = [_job(db) for _ in range(5)]
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    # Queued in the opposite order of their ids; the two oldest queued at the same instant.
    for n, job_id in enumerate(reversed(waiting)):
        _set(db, job_id, queued_at=long_ago + timedelta(minutes=max(n, 1)))
    expired = _job(db)
    _set(
        db,
        expired,
        status="running",
        lease_owner=ALICE,
        lease_expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    published: list[int] = []
    # The three that waited longest, oldest first (a tie by id), and every running job whose
    # lease expired, whatever the batch.
    first = jobs.sweep(db, SETTINGS, published.extend)
    assert first == [waiting[3], waiting[4], waiting[2], expired]
    # Their clocks restarted: the next sweep takes the two that still wait.
    assert jobs.sweep(db, SETTINGS, published.extend) == [waiting[1], waiting[0], expired]
    assert jobs.sweep(db, SETTINGS, published.extend) == [expired]
    assert published == [*first, waiting[1], waiting[0], expired, expired]


def test_a_claim_takes_short_first_attempts_oldest_first(db: Engine) -> None:
    job_ids = [_job(db) for _ in range(7)]
    now = datetime.now(UTC)
    # Queued in the opposite order of their ids, two of them at the same instant.
    for n, job_id in enumerate(reversed(job_ids)):
        _set(db, job_id, queued_at=now - timedelta(minutes=10 - max(n, 1)))
    retried, big, long, running = job_ids[4], job_ids[3], job_ids[2], job_ids[1]
    _set(db, retried, attempts=1)
    _set(db, running, status="running", lease_owner=ALICE, lease_expires_at=now)
    with db.begin() as conn:
        for job_id, values in ((big, {"size_bytes": 5000}), (long, {"duration_s": 40.0})):
            audio = select(TranscriptionJob.audio_object_id).where(TranscriptionJob.id == job_id)
            conn.execute(
                update(AudioObject).where(AudioObject.id == audio.scalar_subquery()).values(values)
            )

    def claim(limit: int) -> list[int]:
        leases = jobs.claim(db, BOB, limit, max_bytes=2000, max_seconds=28.0)
        assert all(lease.attempt == 1 for lease in leases)
        return [lease.job_id for lease in leases]

    # The two oldest were queued at the same instant: the lower id first.
    assert claim(1) == [job_ids[5]]
    assert claim(1) == [job_ids[6]]
    # Not a retried job, an object too big or known too long, or a running job.
    assert claim(5) == [job_ids[0]]
    assert _get(db, retried).status == "queued"


def test_jobs_are_listed_newest_first_by_status(db: Engine) -> None:
    job_ids = [_job(db) for _ in range(6)]
    for job_id in job_ids[1::2]:
        _set(db, job_id, status="succeeded")
    assert [j.id for j in jobs.list_jobs(db, "succeeded", 2)] == [job_ids[5], job_ids[3]]
    assert [j.id for j in jobs.list_jobs(db, "queued")] == job_ids[4::-2]
    assert [j.id for j in jobs.list_jobs(db, limit=3)] == job_ids[:2:-1]
    assert jobs.list_jobs(db, "failed") == []
