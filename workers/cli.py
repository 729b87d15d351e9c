"""``celery -A workers transcriber …``: list, retry and count jobs from the Celery CLI.

Registered through the ``celery.commands`` entry point group. Plain click, as Celery's own
CLI is: Typer does not get along with Celery's preload options.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy import Engine

from transcriber.broker_queue import RedisQueue, redis_queue
from transcriber.clock import as_utc, utc_now
from transcriber.config import Settings, get_settings
from transcriber.console import friendly_errors
from transcriber.jobs import list_jobs, retry, status
from transcriber.migrate import migrated_engine
from transcriber.schema import JOB_STATUSES
from transcriber.sweeper import GRACE_SECONDS, compare


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@click.group(name="transcriber")
def transcriber() -> None:
    """Jobs of the transcription service: list them, retry them, count them."""


@transcriber.command("jobs")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@friendly_errors
def jobs_command(status: str | None, limit: int) -> None:
    """The newest jobs, with their state, attempts and error."""
    rows = list_jobs(migrated_engine(), status, limit)
    if not rows:
        click.echo("no jobs" + (f" with status {status}" if status else ""))
        return
    click.echo(
        f"{'id':>8}  {'status':<10} {'att':>3}  {'queued':<19}  {'finished':<19}  key / error"
    )
    for job in rows:
        click.echo(
            f"{job.id:>8}  {job.status:<10} {job.attempts:>3}  {_when(job.queued_at):<19}  "
            f"{_when(job.finished_at):<19}  {job.key}"
        )
        if job.error_category:
            message = (job.error_message or "").replace("\n", " ")[:160]
            click.echo(f"{'':>8}  {job.error_category}: {message}")


@transcriber.command("retry")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--failed", is_flag=True, help="Every failed job (narrow with the options below).")
@click.option("--error-category", help="With --failed: only this category.")
@click.option(
    "--since", help="With --failed: only jobs that failed at or after this ISO 8601 time."
)
@friendly_errors
def retry_command(
    job_ids: tuple[int, ...], failed: bool, error_category: str | None, since: str | None
) -> None:
    """Queue failed jobs again, with a fresh attempt count. Succeeded jobs are left alone."""
    # Celery loads this module for every `celery` command (an entry point); the app and its
    # settings are loaded only by the commands that publish.
    from workers.tasks import publish

    if not job_ids and not failed:
        raise click.UsageError("name JOB_IDs, or use --failed")
    if (error_category or since) and not failed:
        raise click.UsageError("--error-category and --since go with --failed")
    after = None
    if since:
        try:
            after = datetime.fromisoformat(since)
        except ValueError as exc:
            raise click.BadParameter(f"{since!r} is not ISO 8601", param_hint="--since") from exc
        after = as_utc(after)
    result = retry(migrated_engine(), job_ids, failed=failed, category=error_category, since=after)
    publish(result.requeued)
    for job_id in result.requeued:
        click.echo(f"job {job_id}: queued again")
    for job_id, reason in result.skipped:
        click.echo(f"job {job_id}: {reason}")
    if not result.requeued and not result.skipped:
        click.echo("nothing to retry")


@transcriber.command("status")
@click.pass_context
@friendly_errors
def status_command(ctx: click.Context) -> None:
    """Jobs per state, what the broker holds for them (and whether that agrees), and the age
    of the oldest queued job."""
    engine = migrated_engine()
    summary = status(engine)
    for name in JOB_STATUSES:
        click.echo(f"{name:<11} {summary.counts[name]:>8}")
    settings = get_settings()
    broker = redis_queue(settings)
    if broker is None:
        queue = settings.queue
        click.echo(f"{'queue':<11} {_queue_depth(ctx, queue):>8}  (messages in {queue!r})")
    else:
        try:
            _compare(engine, settings, broker)
        finally:
            broker.close()
    if summary.oldest_queued_at:
        age = utc_now() - summary.oldest_queued_at
        click.echo(f"oldest queued job waiting {int(age.total_seconds())} s")


def _compare(engine: Engine, settings: Settings, broker: RedisQueue) -> None:
    """The sweeper's comparison of the database's queue with the broker's, printed."""
    found = compare(engine, settings, broker)
    if found is None:
        click.echo(f"{'queue':<11} {'?':>8}  (broker unreachable: {broker.last_error})")
        return
    reading = found.reading
    click.echo(f"{'queue':<11} {reading.messages:>8}  (messages in {broker.queue!r})")
    stale = f"; {reading.stale} more taken over {broker.stale_after_s:.0f} s ago"
    click.echo(
        f"{'reserved':<11} {reading.reserved:>8}  (taken by workers, not acknowledged"
        f"{stale if reading.stale else ''})"
    )
    click.echo(f"broker      Redis, run_id {reading.run_id[:12]}, up {reading.uptime_s} s")
    bucket = f" of bucket {found.bucket}" if found.bucket else ""
    waiting = (
        f"{found.waiting + found.recent} job(s){bucket} queued in the database "
        f"({found.recent} in the last {GRACE_SECONDS} s)"
    )
    if found.missing:
        click.echo(
            f"DISAGREE    {waiting}, {reading.held} message(s) in the broker: at least "
            f"{found.missing} lost; `transcriber watch` publishes them again at its next "
            f"sweep (every {settings.sweep_interval_seconds} s)"
        )
    else:
        click.echo(f"agree       {waiting}, {reading.held} message(s) in the broker")


def _queue_depth(ctx: click.Context, queue: str) -> str:
    from workers.app import app as default_app

    app = getattr(ctx.obj, "app", None) or default_app
    try:
        with app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            declared = channel.queue_declare(queue=queue, passive=True)
            return str(declared.message_count)
    except Exception as exc:
        # Redis keeps no empty lists, so an empty queue reads as "not found".
        if "NOT_FOUND" in str(exc) or "404" in str(exc):
            return "0"
        return f"? ({type(exc).__name__}: broker unreachable?)"
