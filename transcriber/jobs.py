"""The job state machine, kept in the database (the broker only carries job ids).

    queued ──lease──▶ running ──▶ succeeded | failed | superseded
      ▲                  │
      └── transient error, expired lease, or an explicit retry of a failed job

A worker takes a job with a conditional UPDATE (the *lease*): only one worker can move a job
from ``queued`` (or from ``running`` with an expired lease, or held by a process that died on
this host) to ``running``, and the attempt is counted in the same statement, before any heavy
work. Every later transition names the lease owner in its WHERE clause, so a worker that lost
its lease can never overwrite the work of the one that took over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, Engine, Select, column, func, select, update
from sqlalchemy import table as table_clause
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from transcriber.clock import as_utc, utc_now
from transcriber.config import Settings
from transcriber.errors import LeaseLost
from transcriber.schema import JOB_STATUSES, AudioObject, TranscriptionJob

# A lease lasts a minute and the worker renews it every 15 s while the job runs (see
# keep_lease), so a job whose worker died, hung on a dead database connection or lost its
# host is free again within a minute, on any host, however long the audio. Three missed
# renewals in a row are needed to lose a live lease.
LEASE_SECONDS = 60
RENEW_EVERY_SECONDS = 15
MAX_ERROR_MESSAGE = 2000
# The most queued jobs one sweep publishes again, the longest waiting first. A queue of a
# million jobs holds hundreds of thousands that waited longer than REQUEUE_AFTER_SECONDS only
# because the queue is long: publishing them all at every sweep flooded the broker with copies,
# and their one UPDATE took seconds, or failed (over 65,535 ids are more parameters than
# PostgreSQL takes). At that size a sweep of 200 (a minute) takes about 6 ms, 12 at p95; one
# of 500 took 10, and over 50 now and then (tests/bench/jobs_at_size.py). What the cap costs:
# after a broker lost every message, the queue is published again 200 jobs a minute, not at
# once; but a worker that takes one of them claims up to PACK_MAX_CLIPS - 1 more short queued
# jobs straight from the database, message or not. That is the rule for a broker the sweeper
# cannot look into: on Redis, transcriber.sweeper compares the queue with the database and
# publishes again, uncapped, what the broker lost, and nothing of a queue that is only long.
SWEEP_BATCH = 200

Publish = Callable[[Sequence[int]], None]
_T = TypeVar("_T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    job_id: int
    owner: str
    attempt: int
    audio_object_id: int


def new_owner() -> str:
    """A lease owner name: host, process id and a random token (``host/pid/token``)."""
    return f"{socket.gethostname()[:200]}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` was a process on this host that no longer runs.

    A worker child killed with SIGKILL leaves its job ``running`` until the lease expires;
    the task message comes back at once (acks late, reject on worker lost), and the next
    worker on the same host can see that the holder is gone instead of waiting for the
    lease to expire (``LEASE_SECONDS``).
    """
    if not owner or owner.count("/") < 2:
        return False
    host, pid, _token = owner.rsplit("/", 2)
    if host != socket.gethostname()[:200] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(engine: Engine, job_id: int, owner: str, settings: Settings) -> Lease | None:
    """Take the lease on job ``job_id``, or return None when it is not ours to run (done,
    superseded, failed, or held by a live worker). Fails the job once it has had
    ``MAX_ATTEMPTS`` attempts."""
    now = utc_now()
    expires = now + timedelta(seconds=LEASE_SECONDS)
    table = TranscriptionJob
    takeable = (table.status == "queued") | (
        (table.status == "running") & (table.lease_expires_at < now)
    )
    with engine.begin() as conn:
        holder = conn.execute(
            select(table.status, table.lease_owner, table.attempts).where(table.id == job_id)
        ).first()
        if holder is None:
            return None
        if holder.status == "running" and _owner_is_dead(holder.lease_owner):
            takeable = takeable | (
                (table.status == "running") & (table.lease_owner == holder.lease_owner)
            )
        values: dict[str, object] = {}
        if holder.status == "running":
            # Taking over: the last attempt never finished, so say why for whoever reads the
            # row (and for the max_attempts message of a file that kills its worker).
            values = {
                "error_category": "worker_lost",
                "error_message": f"attempt {holder.attempts} ended without a result: its "
                f"worker ({holder.lease_owner}) died or overran its lease",
            }
        row = conn.execute(
            update(table)
            .where(table.id == job_id, takeable)
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=expires,
                attempts=table.attempts + 1,
                started_at=now,
                **values,
            )
            .returning(table.attempts, table.audio_object_id, table.error_message)
        ).first()
        if row is None:
            return None
        if row.attempts > settings.max_attempts:
            last = f"; last error: {row.error_message}" if row.error_message else ""
            _finish(
                conn,
                job_id,
                owner,
                "failed",
                "max_attempts",
                f"gave up after {settings.max_attempts} attempts{last}",
            )
            return None
    return Lease(job_id, owner, row.attempts, row.audio_object_id)


def _finish(
    conn: Connection | Session,
    job_id: int,
    owner: str,
    status: str,
    category: str | None,
    message: str | None,
) -> bool:
    statement = (
        update(TranscriptionJob)
        .where(TranscriptionJob.id == job_id, TranscriptionJob.lease_owner == owner)
        .values(
            status=status,
            finished_at=utc_now() if status != "queued" else None,
            lease_owner=None,
            lease_expires_at=None,
            error_category=category,
            error_message=(message or "")[:MAX_ERROR_MESSAGE] or None,
        )
    )
    result = conn.execute(statement)
    return bool(getattr(result, "rowcount", 0))


def renew(engine: Engine, lease: Lease) -> bool:
    """Extend the lease by ``LEASE_SECONDS``; False when it is no longer ours."""
    with engine.begin() as conn:
        result = conn.execute(
            update(TranscriptionJob)
            .where(
                TranscriptionJob.id == lease.job_id,
                TranscriptionJob.lease_owner == lease.owner,
                TranscriptionJob.status == "running",
            )
            .values(lease_expires_at=utc_now() + timedelta(seconds=LEASE_SECONDS))
        )
        return bool(result.rowcount)


@contextmanager
def keep_lease(
    engine: Engine, lease: Lease, *more: Lease, every_s: float = RENEW_EVERY_SECONDS
) -> Iterator[threading.Event]:
    """Renew ``lease`` (and ``more`` leases, for a packed run) in a background thread while
    the block runs.

    The model releases the GIL while it works, so the thread renews on time even during a
    long transcription. A renewal that fails (the database is away) is logged and tried
    again; the yielded event is set once a lease is known to be lost, so that the block may
    stop early (that job's result would be discarded by :func:`succeed` anyway). A lost
    lease is not renewed again; the others are.
    """
    done = threading.Event()
    lost = threading.Event()
    held = [lease, *more]

    def renew_until_done() -> None:
        while held and not done.wait(every_s):
            for each in list(held):
                try:
                    if not renew(engine, each):
                        log.warning("job %s: lease lost to another worker", each.job_id)
                        held.remove(each)
                        lost.set()
                except (OperationalError, DBAPIError) as exc:
                    log.warning("job %s: could not renew the lease: %s", each.job_id, exc.orig)

    thread = threading.Thread(target=renew_until_done, name=f"lease-{lease.job_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        done.set()
        thread.join()


def claim(
    engine: Engine, owner: str, limit: int, *, max_bytes: int, max_seconds: float
) -> list[Lease]:
    """Take up to ``limit`` more queued jobs at once, to pack them with one being run.

    Only first attempts are taken: a job tried before (its worker died, it timed out, a
    transient error) runs alone, so that a clip that kills its worker never takes the clips
    packed with it down a second time; each of those runs again once, alone. Only objects of
    at most ``max_bytes``, and not known to be longer than ``max_seconds``, are taken; oldest
    first. Jobs another worker is claiming at the same moment are skipped, not waited for.
    """
    now = utc_now()
    table = TranscriptionJob
    first_attempt = (table.status == "queued") & (table.attempts == 0)
    candidates = (
        select(table.id)
        .join(AudioObject, AudioObject.id == table.audio_object_id)
        .where(
            first_attempt,
            AudioObject.size_bytes <= max_bytes,
            AudioObject.duration_s.is_(None) | (AudioObject.duration_s <= max_seconds),
        )
        .order_by(table.queued_at, table.id)
        .limit(limit)
        .with_for_update(of=table, skip_locked=True)
    )
    with engine.begin() as conn:
        ids = list(conn.execute(candidates).scalars())
        if not ids:
            return []
        rows = conn.execute(
            update(table)
            .where(table.id.in_(ids), first_attempt)
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
                attempts=table.attempts + 1,
                started_at=now,
            )
            .returning(table.id, table.attempts, table.audio_object_id)
        ).all()
    return [Lease(job_id, owner, attempts, audio) for job_id, attempts, audio in sorted(rows)]


def unclaim(engine: Engine, lease: Lease) -> None:
    """Give back a job taken by :func:`claim` and not run: queued again with its attempt
    not counted, as if it had never been taken (the caller publishes it again)."""
    with engine.begin() as conn:
        conn.execute(
            update(TranscriptionJob)
            .where(
                TranscriptionJob.id == lease.job_id,
                TranscriptionJob.lease_owner == lease.owner,
                TranscriptionJob.status == "running",
            )
            .values(
                status="queued",
                attempts=TranscriptionJob.attempts - 1,
                lease_owner=None,
                lease_expires_at=None,
                started_at=None,
            )
        )


def succeed(session: Session, lease: Lease) -> None:
    """Mark the job succeeded, in the transaction that writes its transcript; raises
    :class:`LeaseLost` (so that transaction rolls back) when the lease is gone."""
    if not _finish(session, lease.job_id, lease.owner, "succeeded", None, None):
        raise LeaseLost(f"job {lease.job_id}: the lease was taken over; result discarded")


def fail(engine: Engine, lease: Lease, category: str, message: str) -> None:
    """Mark the job failed for good (a permanent error)."""
    with engine.begin() as conn:
        _finish(conn, lease.job_id, lease.owner, "failed", category, message)


def supersede(engine: Engine, lease: Lease, message: str) -> None:
    """The object version is gone: nothing to transcribe, and nothing went wrong."""
    with engine.begin() as conn:
        _finish(conn, lease.job_id, lease.owner, "superseded", "superseded", message)


def release(engine: Engine, lease: Lease, category: str, message: str) -> None:
    """A transient error: put the job back to ``queued`` for the next attempt."""
    with engine.begin() as conn:
        _finish(conn, lease.job_id, lease.owner, "queued", category, message)
        conn.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id == lease.job_id, TranscriptionJob.status == "queued")
            .values(queued_at=utc_now())
        )


@dataclass(frozen=True)
class RetryResult:
    requeued: list[int]
    skipped: list[tuple[int, str]]


def retry(
    engine: Engine,
    job_ids: Sequence[int] = (),
    *,
    failed: bool = False,
    category: str | None = None,
    since: datetime | None = None,
) -> RetryResult:
    """Send failed (or stuck queued) jobs back to the queue, with a fresh attempt count.

    ``job_ids`` names jobs; ``failed`` selects every failed job, narrowed by ``category``
    and by ``since`` (failed at or after). Succeeded, superseded and running jobs are left
    alone and reported in ``skipped`` with the reason. The caller publishes ``requeued``.
    """
    table = TranscriptionJob
    query = select(table.id, table.status)
    if job_ids:
        query = query.where(table.id.in_(list(job_ids)))
    if failed:
        query = query.where(table.status == "failed")
        if category:
            query = query.where(table.error_category == category)
        if since:
            query = query.where(table.finished_at >= since)
    requeued: list[int] = []
    skipped: list[tuple[int, str]] = []
    with engine.begin() as conn:
        found: dict[int, str] = dict(conn.execute(query.order_by(table.id)).all())
        for job_id in job_ids:
            if job_id not in found:
                skipped.append((job_id, "no such job"))
        for job_id, status in found.items():
            if status in ("failed", "queued"):
                requeued.append(job_id)
            else:
                skipped.append((job_id, f"already {status}; nothing to do"))
        if requeued:
            conn.execute(
                update(table)
                .where(table.id.in_(requeued), table.status.in_(("failed", "queued")))
                .values(
                    status="queued",
                    attempts=0,
                    queued_at=utc_now(),
                    started_at=None,
                    finished_at=None,
                    error_category=None,
                    error_message=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
    return RetryResult(requeued, sorted(skipped))


def sweep(engine: Engine, settings: Settings, publish: Publish) -> list[int]:
    """Publish again the jobs the queue seems to have lost, judged by age alone: ``queued``
    for longer than ``REQUEUE_AFTER_SECONDS`` without a worker starting them (the
    :data:`SWEEP_BATCH` that waited longest), and the :func:`lapsed` running jobs.
    Publishing twice is harmless: only one worker gets the lease.

    The rule for a broker that cannot be looked into; ``transcriber.sweeper.sweep`` compares
    a Redis broker's queue with the database instead."""
    now = utc_now()
    table = TranscriptionJob
    stale = (
        select(table.id)
        .where(
            table.status == "queued",
            table.queued_at < now - timedelta(seconds=settings.requeue_after_seconds),
        )
        .order_by(table.queued_at, table.id)
        .limit(SWEEP_BATCH)
    )
    with engine.begin() as conn:
        ids = list(conn.execute(stale).scalars())
        if ids:
            # Restart the clock, so the next sweep does not publish them again at once.
            conn.execute(
                update(table)
                .where(table.id.in_(ids), table.status == "queued")
                .values(queued_at=now)
            )
    ids += lapsed(engine, now)
    if ids:
        publish(ids)
    return ids


def lapsed(engine: Engine, now: datetime | None = None) -> list[int]:
    """The running jobs whose lease expired, or whose holder was a process of this host that
    no longer runs: their worker died, and their task message may be gone with it."""
    now = now or utc_now()
    table = TranscriptionJob
    # Running jobs are as many as the workers hold (PACK_MAX_CLIPS each at most), so all of
    # them are read. A holder that died on this host need not wait for its lease to expire:
    # its task message may be gone too (a broker restarted without persistence).
    with engine.connect() as conn:
        running = conn.execute(
            select(table.id, table.lease_owner, table.lease_expires_at).where(
                table.status == "running"
            )
        ).all()
    return [
        job_id
        for job_id, holder, expires in running
        if expires is not None and (expires < now or _owner_is_dead(holder))
    ]


def _in_bucket(query: Select[_T], bucket: str | None) -> Select[_T]:
    if bucket is None:
        return query
    return query.join(AudioObject, AudioObject.id == TranscriptionJob.audio_object_id).where(
        AudioObject.bucket == bucket
    )


def queued_since(engine: Engine, since: datetime, bucket: str | None = None) -> tuple[int, int]:
    """Jobs queued now: how many were queued before ``since``, and how many since (of
    objects of ``bucket``, or all)."""
    table = TranscriptionJob
    recent = _in_bucket(
        select(func.count())
        .select_from(table)
        .where(table.status == "queued", table.queued_at >= since),
        bucket,
    )
    if bucket is None and engine.dialect.name == "postgresql":
        # The queued total from the trigger-kept counts: no count over a long queue's rows.
        total = select(func.coalesce(func.sum(_COUNTS.c.delta), 0)).where(
            _COUNTS.c.status == "queued"
        )
    else:
        total = _in_bucket(
            select(func.count()).select_from(table).where(table.status == "queued"), bucket
        )
    # One statement, so both counts are of one snapshot.
    both = select(total.scalar_subquery(), recent.scalar_subquery())
    with engine.connect() as conn:
        everyone, newer = conn.execute(both).one()
    return int(everyone) - int(newer), int(newer)


def queued_ids(
    engine: Engine, before: datetime, after_id: int, limit: int, bucket: str | None = None
) -> list[int]:
    """Up to ``limit`` ids of the jobs queued before ``before`` (of objects of ``bucket``,
    or all), in id order after ``after_id``: a page of the queue, to walk it whole."""
    table = TranscriptionJob
    query = (
        select(table.id)
        .where(table.status == "queued", table.queued_at < before, table.id > after_id)
        .order_by(table.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(_in_bucket(query, bucket)).scalars())


def buckets(engine: Engine) -> tuple[str, str] | None:
    """The first and last bucket names of the registered objects (an index lookup each):
    the same when every job is of one bucket; None before the first object."""
    with engine.connect() as conn:
        first, last = conn.execute(
            select(func.min(AudioObject.bucket), func.max(AudioObject.bucket))
        ).one()
    return None if first is None else (first, last)


@dataclass(frozen=True)
class QueueStatus:
    counts: dict[str, int]
    oldest_queued_at: datetime | None


# PostgreSQL keeps the jobs per status as signed deltas, written by triggers as jobs change
# (migration 0007): their sum is the count, read in well under a millisecond where counting a
# million queued jobs takes tens of milliseconds.
_COUNTS = table_clause("transcription_job_counts", column("status"), column("delta"))


def status(engine: Engine) -> QueueStatus:
    """Jobs per status and the oldest queued job's time."""
    table = TranscriptionJob
    if engine.dialect.name == "postgresql":
        per_status = select(_COUNTS.c.status, func.sum(_COUNTS.c.delta)).group_by(_COUNTS.c.status)
    else:
        per_status = select(table.status, func.count()).group_by(table.status)
    with engine.connect() as conn:
        counts = {name: int(count) for name, count in conn.execute(per_status)}
        oldest = conn.execute(
            select(func.min(table.queued_at)).where(table.status == "queued")
        ).scalar()
    if isinstance(oldest, str):  # SQLite's aggregate comes back as the stored text
        oldest = as_utc(datetime.fromisoformat(oldest))
    return QueueStatus({s: counts.get(s, 0) for s in JOB_STATUSES}, oldest)


@dataclass(frozen=True)
class JobSummary:
    id: int
    status: str
    attempts: int
    key: str
    queued_at: datetime | None
    finished_at: datetime | None
    error_category: str | None
    error_message: str | None


def list_jobs(engine: Engine, status: str | None = None, limit: int = 50) -> list[JobSummary]:
    """The newest jobs (of one status), with their object keys."""
    table = TranscriptionJob
    query = (
        select(
            table.id,
            table.status,
            table.attempts,
            AudioObject.key,
            table.queued_at,
            table.finished_at,
            table.error_category,
            table.error_message,
        )
        .join(AudioObject, AudioObject.id == table.audio_object_id)
        .order_by(table.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(table.status == status)
    with Session(engine) as session:
        return [JobSummary(*row) for row in session.execute(query)]


def publish_after_commit(publish: Publish, job_ids: Sequence[int]) -> None:
    """Hand committed job ids to ``publish``; a failure is logged, not raised, because the
    jobs are safe in the database and the sweeper publishes queued jobs again."""
    if not job_ids:
        return
    try:
        publish(job_ids)
    except Exception:
        log.warning(
            "could not publish %d new job(s) %s; the sweeper will publish them later",
            len(job_ids),
            list(job_ids)[:20],
            exc_info=True,
        )
