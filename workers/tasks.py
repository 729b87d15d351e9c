"""Celery tasks: decode the arguments, make one call into :mod:`transcriber`, declare retries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext

from celery.exceptions import SoftTimeLimitExceeded

from transcriber.config import get_settings
from transcriber.errors import TransientError
from transcriber.job_run import Outcome, run_job
from workers.app import app

log = logging.getLogger(__name__)


@app.task(
    name="workers.tasks.transcribe",
    bind=True,
    # Only errors a retry can fix; a permanent one has already failed the job row.
    autoretry_for=(TransientError,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=get_settings().max_attempts,
    acks_late=True,
)
def transcribe(self: object, job_id: int | str) -> Outcome | None:
    """Transcribe job ``job_id`` (an id: the job's details live in the database)."""
    try:
        number = int(job_id)
    except (TypeError, ValueError):
        # No job to record the failure on: the message is dropped (acknowledged, never
        # retried), and the log says so.
        log.error("transcribe: %r is not a job id; message dropped", job_id)
        return None
    settings = get_settings()
    return run_job(
        number,
        settings,
        concurrency=settings.worker_concurrency,
        timeout_errors=(SoftTimeLimitExceeded,),
        publish=publish,
    )


def publish(job_ids: Sequence[int]) -> None:
    """Queue a task per job id (call only after the jobs' rows are committed)."""
    if not job_ids:
        return
    # One producer for the lot, and on Redis one pipelined round trip per thousand tasks
    # (kombu >= 5.7's publish batches) instead of a new client and a round trip per task:
    # published one by one, a scan's jobs cost more to announce than to register. Should a
    # batch fail, the jobs are committed anyway and the sweeper publishes them again.
    with app.producer_or_acquire() as producer:
        batch = producer.batch() if hasattr(producer, "batch") else nullcontext()
        with batch:
            for job_id in job_ids:
                transcribe.apply_async(args=(int(job_id),), producer=producer)
