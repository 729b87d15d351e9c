"""The sweeper: what the broker lost, published again (``transcriber watch`` runs it every
``SWEEP_INTERVAL_SECONDS``).

The database owns the jobs; the broker only carries their ids, and may lose them all at once
(Redis restarted without persistence, a failover to a fresh replica, a flush) or one by one
(a publish that failed after its commit). On a Redis broker the sweeper compares the two:

- *waiting*: the jobs queued in the database for longer than :data:`GRACE_SECONDS` (a job
  committed a moment ago may not be published yet), of the watcher's bucket where the
  database holds several (each with its watcher and queue);
- *held*: the messages in the queue, plus those workers took and have not acknowledged
  (:mod:`transcriber.broker_queue`; one taken more than ``REQUEUE_AFTER_SECONDS`` ago no
  longer counts: its worker may be gone).

Held at least as many as waiting, and the same server as at the last sweep: the queue is
intact, however long, and no queued job is published again. Fewer (still so a second later,
since a worker takes a message off the list a moment before it records it as reserved), or
a server that restarted since: the broker lost messages. It holds none at all: every queued
job is published again, the newest too (a loss just after they were published would
otherwise wait a sweep more for them to pass the grace); else the job ids it holds are read
and the other waiting jobs published again. Either way in pages of :data:`REPUBLISH_BATCH`,
uncapped, at the first sweep after the loss.

Every sweep then publishes the running jobs whose lease lapsed (:func:`jobs.lapsed`). Where
the broker cannot be read (not Redis, or not answering) the rule by age, :func:`jobs.sweep`,
stands in. Publishing a job twice is harmless: a worker runs a job only under its lease.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine

from transcriber import jobs
from transcriber.broker_queue import Reading, RedisQueue
from transcriber.clock import utc_now
from transcriber.config import Settings

log = logging.getLogger(__name__)

# Publishing follows the commit within milliseconds (a scan's batch of a thousand, within a
# fraction of a second); a job younger than this is not yet expected in the queue.
GRACE_SECONDS = 10
# How long to wait before looking again at a queue that seems short of messages.
CONFIRM_AFTER_SECONDS = 1.0
# Job ids read from the database and published at a time when the broker lost messages.
REPUBLISH_BATCH = 1000


@dataclass(frozen=True)
class Comparison:
    """The database's queue next to the broker's."""

    waiting: int
    """Jobs queued in the database since before ``before``."""
    recent: int
    """Jobs queued since ``before``: expected in the broker only once it holds anything."""
    reading: Reading
    before: datetime
    bucket: str | None
    """Only jobs of this bucket's objects count (several buckets, each a queue of its own);
    None: every job."""

    @property
    def missing(self) -> int:
        """At least this many queued jobs have no message in the broker."""
        if not self.reading.held:
            return self.waiting + self.recent
        return max(0, self.waiting - self.reading.held)


def compare(
    engine: Engine,
    settings: Settings,
    broker: RedisQueue,
    *,
    confirm_after_s: float = CONFIRM_AFTER_SECONDS,
) -> Comparison | None:
    """The database's waiting jobs and the broker's messages; a shortfall is looked at
    twice. None when the broker cannot be read."""
    bucket = _scope(engine, settings)
    first = _look(engine, broker, bucket)
    if first is None or not first.missing:
        return first
    time.sleep(confirm_after_s)
    second = _look(engine, broker, bucket)
    if second is None or not first.reading.restarted:
        return second
    return replace(second, reading=replace(second.reading, restarted=True))


def sweep(
    engine: Engine, settings: Settings, publish: jobs.Publish, broker: RedisQueue | None
) -> list[int]:
    """Publish again what the broker lost, and the running jobs whose lease lapsed; returns
    the job ids published."""
    found = compare(engine, settings, broker) if broker is not None else None
    if broker is None or found is None:
        return jobs.sweep(engine, settings, publish)
    published = []
    if found.missing or found.reading.restarted:
        published = _publish_lost(engine, broker, found, publish)
    lapsed = jobs.lapsed(engine)
    if lapsed:
        publish(lapsed)
    return published + lapsed


def _scope(engine: Engine, settings: Settings) -> str | None:
    """The bucket whose jobs this queue carries: with one watcher (and queue) per bucket,
    the jobs of another bucket are in another queue. None when all jobs are of one bucket."""
    known = jobs.buckets(engine)
    return None if known is None or known[0] == known[1] else settings.s3_bucket


def _look(engine: Engine, broker: RedisQueue, bucket: str | None) -> Comparison | None:
    before = utc_now() - timedelta(seconds=GRACE_SECONDS)
    # The broker first: a job a worker takes in between then counts as held and as no longer
    # queued (too many messages, never too few).
    reading = broker.read()
    if reading is None:
        return None
    waiting, recent = jobs.queued_since(engine, before, bucket)
    return Comparison(waiting, recent, reading, before, bucket)


def _publish_lost(
    engine: Engine, broker: RedisQueue, found: Comparison, publish: jobs.Publish
) -> list[int]:
    reading = found.reading
    held: set[int] = set()
    before = utc_now()  # it holds nothing: every queued job, the newest too
    if reading.held:
        ids = broker.job_ids()
        if ids is None:
            return []  # the broker went away meanwhile: the next sweep looks again
        held, before = ids, found.before
    restart = (
        f"; Redis restarted since the last sweep (run_id now {reading.run_id[:12]}, "
        f"up {reading.uptime_s} s)"
        if reading.restarted
        else ""
    )
    counts = (
        f"{found.waiting + found.recent} job(s) queued in the database ({found.recent} in the "
        f"last {GRACE_SECONDS} s), {reading.messages} message(s) in queue {broker.queue!r} "
        f"and {reading.reserved} reserved{restart}"
    )
    if found.missing:
        log.warning(
            "the broker lost task messages: %s; publishing again each queued job it lacks",
            counts,
        )
    else:
        log.info("%s; publishing again any queued job it lacks", counts)
    published: list[int] = []
    after = 0
    while page := jobs.queued_ids(engine, before, after, REPUBLISH_BATCH, found.bucket):
        after = page[-1]
        lost = [job_id for job_id in page if job_id not in held]
        if lost:
            publish(lost)
            published += lost
    return published
