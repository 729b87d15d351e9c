"""Jobs per status (``jobs.status``) stay exact through every way a job changes.

On PostgreSQL the counts are deltas written by triggers (migration 0007) and folded together
every 1,024 rows; these tests compare them with ``count(*)`` after each kind of change, under
concurrent workers, across folds, and across the migration itself. On SQLite ``status``
counts the table, and the same tests hold.
"""

from __future__ import annotations

import random
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from tests.support.databases import create_job
from transcriber import jobs, migrate
from transcriber.config import Settings
from transcriber.db import make_engine
from transcriber.schema import JOB_STATUSES, AudioObject, TranscriptionJob

SETTINGS = Settings(max_attempts=1000)
HOST = socket.gethostname()
FOLD_EVERY = 1024  # migration 0007's _FOLD_EVERY


def _job(engine: Engine) -> int:
    return create_job(engine, datetime(2026, 1, 1, tzinfo=UTC))


def _counted(engine: Engine) -> dict[str, int]:
    """Jobs per status as count(*) finds them."""
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                select(TranscriptionJob.status, func.count()).group_by(TranscriptionJob.status)
            ).all()
        )
    return {status: found.get(status, 0) for status in JOB_STATUSES}


def _assert_counts(engine: Engine, **expected: int) -> None:
    counts = jobs.status(engine).counts
    assert counts == _counted(engine)
    assert counts == {status: expected.get(status, 0) for status in JOB_STATUSES}


def _delta_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM transcription_job_counts")).scalar_one())


def test_counts_follow_every_transition(db: Engine) -> None:
    first, second, third, fourth = (_job(db) for _ in range(4))
    _assert_counts(db, queued=4)
    lease = jobs.acquire(db, first, f"{HOST}/1/a", SETTINGS)
    assert lease is not None
    _assert_counts(db, queued=3, running=1)
    claimed = jobs.claim(db, f"{HOST}/1/a", 2, max_bytes=10_000, max_seconds=30.0)
    assert [c.job_id for c in claimed] == [second, third]
    _assert_counts(db, queued=1, running=3)
    with Session(db) as session, session.begin():
        jobs.succeed(session, lease)
    jobs.fail(db, claimed[0], "corrupt", "not audio")
    jobs.release(db, claimed[1], "storage", "S3 timed out")
    _assert_counts(db, queued=2, succeeded=1, failed=1)
    assert jobs.retry(db, [second]).requeued == [second]
    _assert_counts(db, queued=3, succeeded=1)
    # A lost lease writes nothing; a hand-made change is counted like any other.
    assert not jobs.renew(db, lease)
    with db.begin() as conn:
        conn.execute(update(TranscriptionJob).values(status="superseded"))
    _assert_counts(db, superseded=4)
    # Deleting an object deletes its job (ON DELETE CASCADE), and that is counted too.
    with db.begin() as conn:
        conn.execute(
            delete(AudioObject).where(
                AudioObject.id
                == select(TranscriptionJob.audio_object_id)
                .where(TranscriptionJob.id == fourth)
                .scalar_subquery()
            )
        )
    _assert_counts(db, superseded=3)
    with db.begin() as conn:
        conn.execute(delete(TranscriptionJob).where(TranscriptionJob.id == first))
    _assert_counts(db, superseded=2)


def test_a_rolled_back_change_is_not_counted(db: Engine) -> None:
    job_id = _job(db)
    with db.connect() as conn:
        conn.execute(update(TranscriptionJob).values(status="failed"))
        conn.rollback()
    _assert_counts(db, queued=1)
    lease = jobs.acquire(db, job_id, f"{HOST}/1/a", SETTINGS)
    assert lease is not None
    # The transcript's transaction fails after the job was marked succeeded.
    with Session(db) as session:
        jobs.succeed(session, lease)
        session.rollback()
    _assert_counts(db, running=1)


def test_counts_stay_exact_with_workers_racing(db: Engine) -> None:
    job_ids = [_job(db) for _ in range(40)]

    def work(worker: int) -> None:
        chooser = random.Random(worker)
        owner = f"{HOST}/1/w{worker}"
        for _ in range(40):
            lease = jobs.acquire(db, chooser.choice(job_ids), owner, SETTINGS)
            if lease is None:
                continue
            if chooser.random() < 0.5:
                jobs.release(db, lease, "storage", "again")
            else:
                with Session(db) as session, session.begin():
                    jobs.succeed(session, lease)
                jobs.retry(db, [lease.job_id])  # succeeded: left alone, nothing written

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    counts = jobs.status(db).counts
    assert counts == _counted(db)
    assert sum(counts.values()) == len(job_ids)


# PostgreSQL only: SQLite counts the table, there are no deltas to fold.
@pytest.mark.parametrize("migrated_db_url", ["postgresql"], indirect=True)
def test_deltas_are_folded_and_the_sum_kept(db: Engine) -> None:
    job_id = _job(db)
    with db.begin() as conn:
        # Each statement writes two deltas (one status down, one up): enough for two folds.
        for n in range(FOLD_EVERY + 10):
            status = "failed" if n % 2 == 0 else "queued"
            conn.execute(
                update(TranscriptionJob).where(TranscriptionJob.id == job_id).values(status=status)
            )
    assert _delta_rows(db) < FOLD_EVERY + 10
    _assert_counts(db, queued=1)
    # TRUNCATE (which fires no row or DELETE trigger) empties the counts too.
    with db.begin() as conn:
        conn.execute(text("TRUNCATE transcription_jobs CASCADE"))
    _assert_counts(db)
    assert _delta_rows(db) == 0


def test_upgrading_counts_the_jobs_there_are(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0006")
    engine = make_engine(empty_db_url)
    try:
        job_ids = [_job(engine) for _ in range(3)]
        with engine.begin() as conn:
            conn.execute(
                update(TranscriptionJob)
                .where(TranscriptionJob.id == job_ids[0])
                .values(status="failed")
            )
        migrate.upgrade(empty_db_url)
        _assert_counts(engine, queued=2, failed=1)
        migrate.downgrade(empty_db_url, "0006")
        _job(engine)
        migrate.upgrade(empty_db_url)
        _assert_counts(engine, queued=3, failed=1)
    finally:
        engine.dispose()
