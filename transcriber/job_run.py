"""One job, start to finish: what the Celery task ``workers.tasks.transcribe`` runs.

lease → download that exact object version to a private temporary directory → decode →
transcribe → one transaction: transcript, segments, words, audio facts, job succeeded.
Every outcome is recorded on the job row; a transient error also propagates, so that Celery
retries the task with backoff.

With packing on (``TRANSCRIBER_PACK_MAX_SECONDS``), a first attempt also claims more queued
short jobs and runs them all in shared windows (:mod:`transcriber.packing.packed_jobs`); their own
task messages then find them taken or done and do nothing.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from transcriber import jobs
from transcriber.config import Settings
from transcriber.db import get_engine
from transcriber.errors import DatabaseUnavailable
from transcriber.job_steps import Outcome, fetch, save, settle
from transcriber.packing import packed_jobs
from transcriber.speech_model import ModelConfig, get_model, transcribe

log = logging.getLogger(__name__)

__all__ = ["Outcome", "run_job"]


def run_job(
    job_id: int,
    settings: Settings,
    *,
    owner: str | None = None,
    concurrency: int = 1,
    engine: Engine | None = None,
    timeout_errors: tuple[type[BaseException], ...] = (),
    publish: jobs.Publish | None = None,
) -> Outcome:
    """Run job ``job_id`` once. Returns what happened; raises a :class:`TransientError` after
    putting the job back in the queue when a retry may help.

    ``timeout_errors`` are what the caller's time limit raises (Celery's soft limit): the job
    fails with category ``timeout``. Any other unexpected error fails it as ``internal``
    and propagates, so that a bug is logged with its traceback and never leaves a job
    ``running``. ``publish`` queues job ids again; without it, nothing is packed (a packed
    run hands back, through it, the jobs it claimed and did not run).
    """
    engine = engine or get_engine(settings.database_url)
    owner = owner or jobs.new_owner()
    try:
        lease = jobs.acquire(engine, job_id, owner, settings)
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc.orig}") from exc
    if lease is None:
        log.info("job %s: not ours to run (done, or leased by a live worker)", job_id)
        return "skipped"
    log.info("job %s: attempt %s by %s", job_id, lease.attempt, owner)
    try:
        with jobs.keep_lease(engine, lease):
            fetched = fetch(engine, lease, settings)
            loaded = get_model(ModelConfig.from_settings(settings, concurrency=concurrency))
            companions = []
            if publish is not None:
                companions = packed_jobs.claim_companions(engine, fetched, loaded, settings)
            if publish is None or not companions:
                save(engine, fetched, transcribe(fetched.audio, fetched.options, loaded))
                return "succeeded"
    except Exception as exc:
        return settle(engine, lease, exc, timeout_errors)
    return packed_jobs.run(engine, fetched, companions, loaded, settings, publish, timeout_errors)
