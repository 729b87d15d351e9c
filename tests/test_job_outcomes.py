"""What a job's row says when its run ends, branch by branch, with no model, bucket or worker.

:func:`transcriber.job_steps.settle` for every kind of error a run can raise, and
:func:`transcriber.job_run.run_job` with no lease, no database, success, and an error at each
step. Leases are real (:func:`transcriber.jobs.acquire` on both databases); the steps of a run
(fetch, model, transcribe) are stand-ins, and the transcript is saved by the real ``save``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

import transcriber.job_run
from tests.support.databases import create_job
from transcriber import jobs
from transcriber.audio import SAMPLE_RATE, DecodedAudio
from transcriber.config import Settings
from transcriber.errors import (
    AudioTooLong,
    CorruptAudio,
    DatabaseUnavailable,
    LeaseLost,
    ModelUnavailable,
    PermanentError,
    StorageAccessDenied,
    StorageUnavailable,
    Superseded,
    TransientError,
)
from transcriber.job_options import TranscribeOptions
from transcriber.job_run import run_job
from transcriber.job_steps import Fetched, save, settle
from transcriber.results import Segment, Transcription, Word
from transcriber.schema import AudioObject, Transcript, TranscriptionJob

SETTINGS = Settings(max_attempts=3)
HOST = socket.gethostname()
# Owners on this host whose process is alive (pid 1 always is), as two workers would be.
ALICE = f"{HOST}/1/alice"
BOB = f"{HOST}/1/bob"
RELEASE_FAILED = "could not release the lease; it will expire"


class TimeLimit(Exception):
    """What the caller's time limit raises (Celery's soft time limit, in a worker)."""


def _db_error(kind: type[DBAPIError] = OperationalError) -> DBAPIError:
    """What SQLAlchemy raises when the database goes away mid-statement."""
    return kind("UPDATE transcription_jobs", None, Exception("server closed the connection"))


def _job(engine: Engine) -> int:
    return create_job(engine, datetime(2026, 1, 1, tzinfo=UTC))


def _leased(engine: Engine) -> jobs.Lease:
    """A job taken by ALICE: running, first attempt."""
    lease = jobs.acquire(engine, _job(engine), ALICE, SETTINGS)
    assert lease is not None
    return lease


def _get(engine: Engine, job_id: int) -> TranscriptionJob:
    with Session(engine) as session:
        job = session.get_one(TranscriptionJob, job_id)
        session.expunge(job)
        return job


def _transcripts(engine: Engine, job_id: int) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(Transcript.text).where(Transcript.job_id == job_id)))


def _still_leased(engine: Engine, job_id: int, owner: str = ALICE) -> None:
    """The job is as the lease left it: running, held by ``owner``, first attempt."""
    job = _get(engine, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("running", owner, 1)
    assert job.finished_at is None
    assert _transcripts(engine, job_id) == []


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database that cannot be opened: every statement raises SQLAlchemy's
    OperationalError, as when the database is away."""
    engine = create_engine(f"sqlite:///{tmp_path / 'no such directory' / 'jobs.db'}")
    yield engine
    engine.dispose()


# --- settle: what each error means for the job -------------------------------------------


def test_superseded_ends_the_job_as_superseded_not_failed(db: Engine) -> None:
    lease = _leased(db)
    assert settle(db, lease, Superseded("the version was overwritten"), ()) == "superseded"
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category, job.error_message) == (
        "superseded",
        "superseded",
        "the version was overwritten",
    )
    assert (job.lease_owner, job.attempts) == (None, 1)
    assert job.finished_at is not None


@pytest.mark.parametrize(
    "error",
    [
        CorruptAudio("the file is not audio"),
        AudioTooLong("the file is 2 h long"),
        StorageAccessDenied("reading s3://audio/a.wav: AccessDenied"),
        ModelUnavailable("no model tiny.xx"),
        PermanentError("retrying cannot help"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_permanent_error_fails_the_job_with_its_category(
    db: Engine, error: PermanentError
) -> None:
    lease = _leased(db)
    assert settle(db, lease, error, ()) == "failed"
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category, job.error_message) == (
        "failed",
        error.category,
        str(error),
    )
    assert (job.lease_owner, job.attempts) == (None, 1)
    assert job.finished_at is not None


def test_a_lost_lease_skips_and_leaves_the_job_to_its_holder(db: Engine) -> None:
    lease = _leased(db)
    assert settle(db, lease, LeaseLost("taken over"), ()) == "skipped"
    _still_leased(db, lease.job_id)


def test_a_transient_error_puts_the_job_back_and_propagates(db: Engine) -> None:
    lease = _leased(db)
    error = StorageUnavailable("S3 did not answer")
    with pytest.raises(StorageUnavailable) as raised:
        settle(db, lease, error, ())
    assert raised.value is error
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category, job.error_message) == (
        "queued",
        "storage",
        "S3 did not answer",
    )
    assert (job.lease_owner, job.lease_expires_at, job.finished_at) == (None, None, None)
    assert job.attempts == 1  # the attempt counts: MAX_ATTEMPTS bounds the retries


def test_a_transient_error_of_no_particular_kind_is_released_with_its_category(
    db: Engine,
) -> None:
    lease = _leased(db)
    with pytest.raises(TransientError):
        settle(db, lease, TransientError("a hiccup"), ())
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category) == ("queued", "transient")


@pytest.mark.parametrize("kind", [OperationalError, DBAPIError])
def test_a_database_error_puts_the_job_back_and_raises_database_unavailable(
    db: Engine, kind: type[DBAPIError]
) -> None:
    lease = _leased(db)
    error = _db_error(kind)
    with pytest.raises(DatabaseUnavailable, match="server closed the connection") as raised:
        settle(db, lease, error, ())
    assert raised.value.__cause__ is error
    assert raised.value.category == "database"
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category, job.error_message) == (
        "queued",
        "database",
        "the database failed: server closed the connection",
    )
    assert (job.lease_owner, job.attempts) == (None, 1)


def test_one_of_the_timeout_errors_fails_the_job_as_timeout(db: Engine) -> None:
    lease = _leased(db)
    assert settle(db, lease, TimeLimit("soft time limit exceeded"), (TimeLimit,)) == "failed"
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category, job.error_message) == (
        "failed",
        "timeout",
        "over the time limit (TRANSCRIBER_TASK_TIME_LIMIT)",
    )
    assert job.lease_owner is None


@pytest.mark.parametrize(
    ("error", "timeout_errors", "message"),
    [
        (ValueError("a bug"), (), "ValueError: a bug"),
        (KeyError("segments"), (), "KeyError: 'segments'"),
        # A time limit the caller did not name is a bug like any other.
        (TimeLimit("soft time limit exceeded"), (), "TimeLimit: soft time limit exceeded"),
        (ValueError("a bug"), (TimeLimit,), "ValueError: a bug"),
    ],
    ids=["ValueError", "KeyError", "unnamed-time-limit", "ValueError-with-time-limits"],
)
def test_anything_else_fails_the_job_as_internal_and_propagates(
    db: Engine,
    error: Exception,
    timeout_errors: tuple[type[BaseException], ...],
    message: str,
) -> None:
    lease = _leased(db)
    with pytest.raises(type(error)) as raised:
        settle(db, lease, error, timeout_errors)
    assert raised.value is error
    job = _get(db, lease.job_id)
    assert (job.status, job.error_category, job.error_message) == ("failed", "internal", message)
    assert (job.lease_owner, job.attempts) == (None, 1)
    assert job.finished_at is not None


@pytest.mark.parametrize(
    ("error", "raises"),
    [
        (StorageUnavailable("S3 did not answer"), StorageUnavailable),
        (_db_error(), DatabaseUnavailable),
    ],
    ids=["transient", "database"],
)
def test_a_release_the_database_refuses_is_logged_and_the_lease_left_to_expire(
    db: Engine,
    unreachable: Engine,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    raises: type[Exception],
) -> None:
    lease = _leased(db)
    with caplog.at_level("WARNING", logger="transcriber.job_steps"), pytest.raises(raises):
        settle(unreachable, lease, error, ())
    assert f"job {lease.job_id}: {RELEASE_FAILED}" in caplog.text
    _still_leased(db, lease.job_id)


# --- run_job: the run around it -----------------------------------------------------------

MODEL = object()  # what the stand-in get_model loads
RESULT = Transcription(
    language="en",
    language_probability=0.98,
    duration_s=1.0,
    segments=(
        Segment(
            0.1,
            0.9,
            "Pressure is rising.",
            words=(
                Word(0.1, 0.4, " Pressure", 0.9),
                Word(0.4, 0.5, " is", 0.95),
                Word(0.5, 0.9, " rising.", 0.9),
            ),
        ),
    ),
    model="tiny.en",
    processing_s=0.2,
)


class Steps:
    """Stand-ins for the steps :func:`run_job` takes, put in ``transcriber.job_run``: each
    records that it ran and raises what ``failures`` names for it. ``save`` is the real
    one, after ``before_save``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failures: dict[str, Exception] = {}
        self.saved: list[tuple[Fetched, Transcription]] = []
        self.before_save: list[Callable[[], None]] = []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.failures:
            raise self.failures[name]

    def fetch(self, engine: Engine, lease: jobs.Lease, settings: Settings) -> Fetched:
        self._step("fetch")
        one_second = np.zeros(SAMPLE_RATE, dtype=np.float32)
        audio = DecodedAudio((one_second,), 44_100, 2, "wav", "pcm_s16le")
        options = TranscribeOptions.from_settings(settings)
        return Fetched(lease, options, audio, settings.tolerance_by_kind)

    def get_model(self, config: Any) -> Any:
        self._step("get_model")
        return MODEL

    def transcribe(self, audio: DecodedAudio, options: TranscribeOptions, loaded: Any) -> Any:
        self._step("transcribe")
        assert loaded is MODEL
        return RESULT

    def save(self, engine: Engine, fetched: Fetched, result: Transcription) -> None:
        self._step("save")
        self.saved.append((fetched, result))
        for hook in self.before_save:
            hook()
        save(engine, fetched, result)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Steps:
    stand_ins = Steps()
    for name in ("fetch", "get_model", "transcribe", "save"):
        monkeypatch.setattr(transcriber.job_run, name, getattr(stand_ins, name))
    return stand_ins


def test_a_run_saves_the_transcript_and_the_job_succeeds(db: Engine, steps: Steps) -> None:
    job_id = _job(db)
    assert run_job(job_id, SETTINGS, owner=ALICE, engine=db) == "succeeded"
    assert steps.calls == ["fetch", "get_model", "transcribe", "save"]
    [(fetched, result)] = steps.saved
    assert (fetched.lease.job_id, fetched.lease.owner, fetched.lease.attempt) == (job_id, ALICE, 1)
    assert result is RESULT
    job = _get(db, job_id)
    assert (job.status, job.error_category, job.lease_owner, job.attempts) == (
        "succeeded",
        None,
        None,
        1,
    )
    assert job.finished_at is not None
    assert _transcripts(db, job_id) == ["Pressure is rising."]
    with Session(db) as session:
        audio = session.get_one(AudioObject, job.audio_object_id)
        assert (audio.duration_s, audio.sample_rate, audio.channels) == (1.0, 44_100, 2)


def _held_by_a_live_worker(engine: Engine, job_id: int) -> None:
    assert jobs.acquire(engine, job_id, BOB, SETTINGS) is not None


def _finished(engine: Engine, job_id: int) -> None:
    lease = jobs.acquire(engine, job_id, BOB, SETTINGS)
    assert lease is not None
    with Session(engine) as session, session.begin():
        jobs.succeed(session, lease)


def _out_of_attempts(engine: Engine, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(TranscriptionJob)
            .where(TranscriptionJob.id == job_id)
            .values(attempts=SETTINGS.max_attempts)
        )


@pytest.mark.parametrize(
    ("before", "status", "owner", "category"),
    [
        (_held_by_a_live_worker, "running", BOB, None),
        (_finished, "succeeded", None, None),
        (_out_of_attempts, "failed", None, "max_attempts"),
    ],
    ids=["held-by-a-live-worker", "finished", "out-of-attempts"],
)
def test_a_job_whose_lease_is_not_ours_is_skipped_without_running(
    db: Engine, steps: Steps, before: Any, status: str, owner: str | None, category: str | None
) -> None:
    job_id = _job(db)
    before(db, job_id)
    assert run_job(job_id, SETTINGS, owner=ALICE, engine=db) == "skipped"
    assert steps.calls == []
    job = _get(db, job_id)
    assert (job.status, job.lease_owner, job.error_category) == (status, owner, category)


def test_a_job_that_does_not_exist_is_skipped(db: Engine, steps: Steps) -> None:
    assert run_job(12345, SETTINGS, owner=ALICE, engine=db) == "skipped"
    assert steps.calls == []


def test_no_database_to_take_the_lease_from_raises_database_unavailable(
    db: Engine, unreachable: Engine, steps: Steps
) -> None:
    job_id = _job(db)
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database") as raised:
        run_job(job_id, SETTINGS, owner=ALICE, engine=unreachable)
    assert isinstance(raised.value.__cause__, OperationalError)
    assert steps.calls == []
    job = _get(db, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 0, None)


def test_a_database_error_while_taking_the_lease_raises_database_unavailable(
    db: Engine, steps: Steps, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _job(db)
    error = _db_error(DBAPIError)

    def acquire(*args: object) -> None:
        raise error

    monkeypatch.setattr(jobs, "acquire", acquire)
    with pytest.raises(DatabaseUnavailable, match="server closed the connection") as raised:
        run_job(job_id, SETTINGS, owner=ALICE, engine=db)
    assert raised.value.__cause__ is error
    assert steps.calls == []
    assert _get(db, job_id).status == "queued"


@pytest.mark.parametrize(
    ("step", "error", "outcome", "category"),
    [
        ("fetch", Superseded("the version was overwritten"), "superseded", "superseded"),
        ("fetch", CorruptAudio("the file is not audio"), "failed", "corrupt"),
        ("get_model", ModelUnavailable("no model tiny.xx"), "failed", "model_unavailable"),
        ("transcribe", TimeLimit("soft time limit exceeded"), "failed", "timeout"),
    ],
    ids=["superseded", "corrupt", "model", "timeout"],
)
def test_an_error_in_a_step_ends_the_job_as_settle_says(
    db: Engine, steps: Steps, step: str, error: Exception, outcome: str, category: str
) -> None:
    job_id = _job(db)
    steps.failures[step] = error
    result = run_job(job_id, SETTINGS, owner=ALICE, engine=db, timeout_errors=(TimeLimit,))
    assert result == outcome
    assert steps.calls[-1] == step  # nothing ran after the step that failed
    job = _get(db, job_id)
    assert (job.status, job.error_category, job.lease_owner) == (outcome, category, None)
    assert _transcripts(db, job_id) == []


@pytest.mark.parametrize(
    ("step", "error", "raises", "status", "category"),
    [
        ("fetch", StorageUnavailable("S3 did not answer"), StorageUnavailable, "queued", "storage"),
        ("transcribe", _db_error(), DatabaseUnavailable, "queued", "database"),
        ("save", ValueError("a bug"), ValueError, "failed", "internal"),
    ],
    ids=["transient", "database", "internal"],
)
def test_an_error_in_a_step_that_settle_raises_propagates_from_the_run(
    db: Engine,
    steps: Steps,
    step: str,
    error: Exception,
    raises: type[Exception],
    status: str,
    category: str,
) -> None:
    job_id = _job(db)
    steps.failures[step] = error
    with pytest.raises(raises):
        run_job(job_id, SETTINGS, owner=ALICE, engine=db, timeout_errors=(TimeLimit,))
    assert steps.calls[-1] == step
    job = _get(db, job_id)
    assert (job.status, job.error_category, job.lease_owner, job.attempts) == (
        status,
        category,
        None,
        1,
    )
    assert _transcripts(db, job_id) == []


def test_a_lease_taken_over_before_the_save_writes_nothing_and_skips(
    db: Engine, steps: Steps
) -> None:
    job_id = _job(db)

    def taken_over() -> None:
        # ALICE's lease expires mid-run and BOB takes the job: ALICE's save must not land.
        with db.begin() as conn:
            conn.execute(
                update(TranscriptionJob)
                .where(TranscriptionJob.id == job_id)
                .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert jobs.acquire(db, job_id, BOB, SETTINGS) is not None

    steps.before_save.append(taken_over)
    assert run_job(job_id, SETTINGS, owner=ALICE, engine=db) == "skipped"
    assert steps.calls == ["fetch", "get_model", "transcribe", "save"]
    job = _get(db, job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("running", BOB, 2)
    assert _transcripts(db, job_id) == []
