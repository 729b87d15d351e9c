"""A Celery app for the backlog test: the real one (``workers.app``), whose task takes each
job's lease as the real one does, holds it :data:`SECONDS` and ends the job as superseded,
with no audio and no model: a worker far slower than its queue is long.

Start a worker with ``celery -A tests.support.slow_worker worker`` (the repository root on
``PYTHONPATH``). The prefork pool forks after this module is imported, so every child runs
the slow stand-in.
"""

from __future__ import annotations

import time

import workers.tasks
from transcriber import jobs
from transcriber.config import Settings
from transcriber.db import get_engine
from transcriber.job_steps import Outcome
from workers import app

SECONDS = 2.0


def _slow_run_job(job_id: int, settings: Settings, **_: object) -> Outcome:
    engine = get_engine(settings.database_url)
    lease = jobs.acquire(engine, job_id, jobs.new_owner(), settings)
    if lease is None:
        return "skipped"
    time.sleep(SECONDS)
    jobs.supersede(engine, lease, "a slow worker's stand-in for a transcription")
    return "superseded"


# The task calls the name it imported; replace it there.
workers.tasks.run_job = _slow_run_job  # type: ignore[attr-defined]

__all__ = ["SECONDS", "app"]
