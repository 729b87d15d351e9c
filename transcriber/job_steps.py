"""The steps of running a job, shared by a job run alone (:mod:`transcriber.job_run`) and by
jobs run together in packed windows (:mod:`transcriber.packing.packed_jobs`): fetch the audio, save
the transcript, and record on the job what an error means."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from transcriber import jobs, storage
from transcriber.audio import DecodedAudio, decode
from transcriber.config import ReadingTolerance, Settings
from transcriber.errors import (
    DatabaseUnavailable,
    LeaseLost,
    PermanentError,
    Superseded,
    TransientError,
)
from transcriber.job_options import TranscribeOptions, options_for_audio
from transcriber.placement import place_downloaded
from transcriber.results import Transcription
from transcriber.schema import AudioObject
from transcriber.transcripts import save_transcription

log = logging.getLogger(__name__)

Outcome = Literal["succeeded", "failed", "superseded", "skipped", "released"]


@dataclass(frozen=True)
class Fetched:
    """A leased job's audio, decoded, the options to transcribe it with, and the tolerances
    (by sensor kind) to write on the readings said in it."""

    lease: jobs.Lease
    options: TranscribeOptions
    audio: DecodedAudio
    tolerances: Mapping[str, ReadingTolerance]

    @property
    def duration_s(self) -> float:
        return self.audio.duration_s


def fetch(engine: Engine, lease: jobs.Lease, settings: Settings) -> Fetched:
    """Download the job's exact object version to a private directory and decode it."""
    with Session(engine) as session:
        audio = session.get_one(AudioObject, lease.audio_object_id)
        session.expunge(audio)
    # A private directory per job; the file inside is named by tempfile, never by the key.
    with tempfile.TemporaryDirectory(prefix=f"transcriber-job-{lease.job_id}-") as scratch:
        downloaded = storage.download(
            storage.s3_client(settings), audio, Path(scratch), settings.max_audio_bytes
        )
        with Session(engine) as session, session.begin():
            # A scanned object learns its user metadata now, and with it maybe another
            # facility, whose vocabulary the options take.
            place_downloaded(session, audio, downloaded, settings)
            options = options_for_audio(session, audio.id, settings)
        decoded = decode(
            downloaded.path,
            max_bytes=settings.max_audio_bytes,
            max_seconds=settings.max_audio_seconds,
            split_channels=options.channels == "split",
        )
    return Fetched(lease, options, decoded, settings.tolerance_by_kind)


def record_audio_facts(session: Session, fetched: Fetched) -> None:
    """What decoding learned about the object: duration, sample rate, channels."""
    decoded = fetched.audio
    session.execute(
        update(AudioObject)
        .where(AudioObject.id == fetched.lease.audio_object_id)
        .values(
            duration_s=decoded.duration_s,
            sample_rate=decoded.source_sample_rate,
            channels=decoded.source_channels,
        )
    )


def save(engine: Engine, fetched: Fetched, result: Transcription) -> None:
    """One transaction: transcript, segments, words, mentions, audio facts, job succeeded
    (raises :class:`~transcriber.errors.LeaseLost`, writing nothing, when the lease was taken
    over)."""
    lease = fetched.lease
    with Session(engine) as session, session.begin():
        save_transcription(session, lease.job_id, result, fetched.tolerances)
        record_audio_facts(session, fetched)
        jobs.succeed(session, lease)
    log.info(
        "job %s: %d segments from %.1f s of audio in %.1f s",
        lease.job_id,
        len(result.segments),
        result.duration_s,
        result.processing_s or 0.0,
    )


def settle(
    engine: Engine,
    lease: jobs.Lease,
    exc: Exception,
    timeout_errors: tuple[type[BaseException], ...],
) -> Outcome:
    """Record on the job what ``exc``, raised while running it, means, and return the
    outcome; raise again what must propagate.

    A permanent error fails the job; a transient one puts it back in the queue and
    propagates (so that Celery retries with backoff), as does a database failure. One of
    ``timeout_errors`` (the caller's time limit) fails the job as ``timeout``. Anything
    else is a bug: the job fails as ``internal`` and the error propagates, so that it is
    logged with its traceback and never leaves a job ``running``.
    """
    job_id = lease.job_id
    if isinstance(exc, Superseded):
        jobs.supersede(engine, lease, str(exc))
        return "superseded"
    if isinstance(exc, PermanentError):
        log.warning("job %s failed (%s): %s", job_id, exc.category, exc)
        jobs.fail(engine, lease, exc.category, str(exc))
        return "failed"
    if isinstance(exc, LeaseLost):
        log.warning("job %s: lease lost to another worker; result discarded", job_id)
        return "skipped"
    if isinstance(exc, TransientError):
        release_quietly(engine, lease, exc.category, str(exc))
        raise exc
    if isinstance(exc, (OperationalError, DBAPIError)):
        # The database went away mid-job: give the lease back if it is there again, else the
        # lease expires within LEASE_SECONDS; Celery's retry or the sweeper brings it back.
        release_quietly(engine, lease, "database", f"the database failed: {exc.orig}")
        raise DatabaseUnavailable(f"the database failed during job {job_id}: {exc.orig}") from exc
    if isinstance(exc, timeout_errors):
        jobs.fail(engine, lease, "timeout", "over the time limit (TRANSCRIBER_TASK_TIME_LIMIT)")
        return "failed"
    jobs.fail(engine, lease, "internal", f"{type(exc).__name__}: {exc}")
    raise exc


def release_quietly(engine: Engine, lease: jobs.Lease, category: str, message: str) -> None:
    try:
        jobs.release(engine, lease, category, message)
    except (OperationalError, DBAPIError):
        log.warning("job %s: could not release the lease; it will expire", lease.job_id)
