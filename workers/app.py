"""The Celery app and its configuration, and nothing else.

Each setting here carries one of the reliability promises (docs/architecture.md,
"Reliability"): the database owns job state, so the broker only has to deliver a job id at
least once, and a task that is lost with its worker must come back.
"""

from __future__ import annotations

from celery import Celery

from transcriber.config import get_settings

settings = get_settings()

app = Celery("transcriber", include=["workers.tasks"])
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    # JSON only: a pickled message would run code in the worker.
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    event_serializer="json",
    # Results live in the database; the broker is not a result store.
    task_ignore_result=True,
    result_backend=None,
    # A message is acknowledged only after the task ran, and given back when the worker
    # process dies, so that a killed worker's job runs again.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # One message at a time per process: a prefetched job would wait behind a long one.
    worker_prefetch_multiplier=1,
    worker_concurrency=settings.worker_concurrency,
    task_time_limit=settings.task_time_limit,
    task_soft_time_limit=settings.soft_time_limit,
    # Redis redelivers an unacknowledged message after the visibility timeout; it must be
    # longer than any task may run, or a long job would be handed to a second worker.
    broker_transport_options={
        "visibility_timeout": settings.broker_visibility_timeout,
        # Look for such messages every 10 s (kombu's default is every 100 s), so that the
        # job of a host that died comes back soon after the visibility timeout.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    },
    # With acks late, a task still running when the broker connection drops would be
    # redelivered while it goes on; cancel it instead.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_default_queue=settings.queue,
    task_routes={"workers.tasks.transcribe": {"queue": settings.queue}},
    worker_hijack_root_logger=False,
)
