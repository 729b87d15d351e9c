"""One job, start to finish: what the Celery task ``workers.tasks.transcribe`` runs.

lease → download that exact object version to a private temporary directory → decode →
transcribe → one transaction: transcript, segments, words, audio facts, job succeeded.
Every outcome is recorded on the job row; a transient error also propagates, so that Celery
retries the task with backoff.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from transcriber import jobs, storage
from transcriber.audio import decode
from transcriber.config import Settings
from transcriber.db import get_engine
from transcriber.engine import EngineConfig, get_model, transcribe
from transcriber.errors import DatabaseUnavailable, PermanentError, Superseded, TransientError
from transcriber.normalize import options_for_audio, save_transcription
from transcriber.schema import AudioObject

log = logging.getLogger(__name__)

Outcome = Literal["succeeded", "failed", "superseded", "skipped", "released"]


def run_job(
    job_id: int,
    settings: Settings,
    *,
    owner: str | None = None,
    concurrency: int = 1,
    engine: Engine | None = None,
    timeout_errors: tuple[type[BaseException], ...] = (),
) -> Outcome:
    """Run job ``job_id`` once. Returns what happened; raises a :class:`TransientError` after
    putting the job back in the queue when a retry may help.

    ``timeout_errors`` are what the caller's time limit raises (Celery's soft limit): the job
    fails with category ``timeout``. Any other unexpected error fails it as ``internal``
    and propagates, so that a bug is logged with its traceback and never leaves a job
    ``running``.
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
            _work(engine, lease, settings, concurrency)
    except Superseded as exc:
        jobs.supersede(engine, lease, str(exc))
        return "superseded"
    except PermanentError as exc:
        log.warning("job %s failed (%s): %s", job_id, exc.category, exc)
        jobs.fail(engine, lease, exc.category, str(exc))
        return "failed"
    except jobs.LeaseLost:
        log.warning("job %s: lease lost to another worker; result discarded", job_id)
        return "skipped"
    except TransientError as exc:
        _release_quietly(engine, lease, exc.category, str(exc))
        raise
    except (OperationalError, DBAPIError) as exc:
        # The database went away mid-job: give the lease back if it is there again, else the
        # lease expires within LEASE_SECONDS; Celery's retry or the sweeper brings the job back.
        _release_quietly(engine, lease, "database", f"the database failed: {exc.orig}")
        raise DatabaseUnavailable(f"the database failed during job {job_id}: {exc.orig}") from exc
    except timeout_errors:
        jobs.fail(engine, lease, "timeout", "over the time limit (TRANSCRIBER_TASK_TIME_LIMIT)")
        return "failed"
    except Exception as exc:
        jobs.fail(engine, lease, "internal", f"{type(exc).__name__}: {exc}")
        raise
    return "succeeded"


def _work(engine: Engine, lease: jobs.Lease, settings: Settings, concurrency: int) -> None:
    with Session(engine) as session:
        audio = session.get_one(AudioObject, lease.audio_object_id)
        options = options_for_audio(session, audio.id, settings)
        session.expunge(audio)
    # A private directory per job; the file inside is named by tempfile, never by the key.
    with tempfile.TemporaryDirectory(prefix=f"transcriber-job-{lease.job_id}-") as scratch:
        path = storage.download(
            storage.s3_client(settings), audio, Path(scratch), settings.max_audio_bytes
        )
        decoded = decode(
            path,
            max_bytes=settings.max_audio_bytes,
            max_seconds=settings.max_audio_seconds,
            split_channels=options.channels == "split",
        )
    loaded = get_model(EngineConfig.from_settings(settings, concurrency=concurrency))
    result = transcribe(decoded, options, loaded)
    with Session(engine) as session, session.begin():
        save_transcription(session, lease.job_id, result)
        session.execute(
            update(AudioObject)
            .where(AudioObject.id == audio.id)
            .values(
                duration_s=decoded.duration_s,
                sample_rate=decoded.source_sample_rate,
                channels=decoded.source_channels,
            )
        )
        jobs.succeed(session, lease)
    log.info(
        "job %s: %d segments from %.1f s of audio in %.1f s",
        lease.job_id,
        len(result.segments),
        result.duration_s,
        result.processing_s or 0.0,
    )


def _release_quietly(engine: Engine, lease: jobs.Lease, category: str, message: str) -> None:
    try:
        jobs.release(engine, lease, category, message)
    except (OperationalError, DBAPIError):
        log.warning("job %s: could not release the lease; it will expire", lease.job_id)
