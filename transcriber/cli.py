"""The ``transcriber`` command."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy.orm import Session

from transcriber import __version__, demo_data, migrate
from transcriber.clock import as_utc
from transcriber.config import get_settings, redact_url
from transcriber.console import byte_progress, count_progress, err, friendly_errors
from transcriber.errors import TranscriberError
from transcriber.export import FORMATS, render, to_json_dict
from transcriber.mention_rebuild import rebuild, transcripts_to_rebuild
from transcriber.migrate import migrated_engine
from transcriber.sensors import load_files
from transcriber.transcripts import load_spoken_readings, load_transcription

# What loads numpy, PyAV, faster-whisper, boto3, Celery or moto is imported by the commands
# that use it, so that `transcriber --help` or `transcriber db upgrade` starts at once.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="transcriber")
def main() -> None:
    """Batch speech-to-text for audio in S3, with transcripts in SQL next to sensor data.

    Settings come from TRANSCRIBER_* environment variables (or a .env file); see the README.
    """


# --- db -----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create and migrate the database schema (Alembic, with TRANSCRIBER_DATABASE_URL)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@friendly_errors
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""

    url = get_settings().database_url
    migrate.upgrade(url, revision)
    err.print(f"database {redact_url(url)} is at revision {migrate.current_revision(url)}")


@db.command("downgrade")
@click.argument("revision")
@friendly_errors
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION; 'base' removes every table and view."""

    url = get_settings().database_url
    migrate.downgrade(url, revision)
    current = migrate.current_revision(url) or "base (empty)"
    err.print(f"database {redact_url(url)} is at revision {current}")


@db.command("current")
@friendly_errors
def db_current() -> None:
    """Print the database's revision, and whether it is the newest."""

    url = get_settings().database_url
    current = migrate.current_revision(url)
    head = migrate.head_revision(url)
    state = "up to date" if current == head else f"behind; newest is {head}"
    click.echo(f"{current or 'base (not migrated)'} ({state})")


# --- sensors ------------------------------------------------------------------------------


@main.group()
def sensors() -> None:
    """Load facilities, sensors and readings (the data transcripts join to)."""


def _load(paths: list[Path]) -> None:

    engine = migrated_engine()
    started = time.perf_counter()
    with byte_progress(sum(p.stat().st_size for p in paths), "loading") as advance:
        result = load_files(engine, paths, advance)
    err.print(
        f"loaded {result.facilities:,} facilities, {result.sensors:,} sensors and "
        f"{result.readings:,} readings in {time.perf_counter() - started:.1f} s"
    )


@sensors.command("load")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@friendly_errors
def sensors_load(files: tuple[Path, ...]) -> None:
    """Load FILES (CSV) in one transaction; any bad row loads nothing.

    \b
    Each file's header row says what it holds:
      facilities  code,name[,timezone][,region]
      sensors     facility,code,kind,unit[,description]
      readings    facility,sensor,ts,value
    A ts without an offset is local time at the facility. Facilities and sensors are
    upserted by code; a reading that exists already is replaced.
    """
    _load(list(files))


def _parse_start(_ctx: Any, _param: Any, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        start = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date") from exc
    return start.replace(tzinfo=start.tzinfo or UTC)


@sensors.command("demo-data")
@click.option("--days", type=click.IntRange(1, 400), default=7, show_default=True)
@click.option(
    "--start",
    callback=_parse_start,
    help="First day (ISO 8601, UTC). Default: so that the data ends today.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the CSV files here instead of loading them.",
)
@friendly_errors
def sensors_demo_data(days: int, start: datetime | None, seed: int, out: Path | None) -> None:
    """Generate a synthetic data set: 3 facilities, 20 sensors, minute readings with daily
    cycles, noise and a few anomalies; load it (or write it with --out)."""

    start = start or demo_data.default_start(days)
    with tempfile.TemporaryDirectory(prefix="transcriber-demo-") as scratch:
        paths = demo_data.write_csv(out or Path(scratch), days, start, seed)
        if out is None:
            _load(list(paths.values()))
        else:
            err.print(f"wrote {', '.join(str(p) for p in paths.values())}")
    for anomaly, at in demo_data.anomaly_times(start, days):
        click.echo(
            f"anomaly: {anomaly.facility}/{anomaly.sensor} {anomaly.description}, "
            f"{at.isoformat()} for {anomaly.minutes} min"
        )


# --- transcription ------------------------------------------------------------------------

_FORMAT_CHOICE = click.Choice(FORMATS)


@main.command("transcribe")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=_FORMAT_CHOICE, default="txt", show_default=True)
@click.option("--model", help="Model name or directory (default: TRANSCRIBER_MODEL).")
@click.option(
    "--channels", type=click.Choice(["mix", "split"]), help="Default: TRANSCRIBER_CHANNELS."
)
@click.option(
    "--language", help="Language code such as en; default: TRANSCRIBER_LANGUAGE or detect."
)
@click.option("--words", is_flag=True, help="Include word timings (JSON).")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write FILE.<format> here for each input instead of printing.",
)
@friendly_errors
def transcribe_files(
    files: tuple[Path, ...],
    fmt: str,
    model: str | None,
    channels: str | None,
    language: str | None,
    words: bool,
    output_dir: Path | None,
) -> None:
    """Transcribe local audio FILES with no services at all (no database, bucket or queue).

    Prints the transcripts (JSON: one list with an entry per file), or writes them to
    --output-dir. Exits with status 1 when any file failed; each failure is reported with
    its reason.
    """
    import json

    from transcriber.job_options import TranscribeOptions
    from transcriber.speech_model import ModelConfig, get_model, transcribe_file

    settings = get_settings()
    overrides = {"model": model} if model else {}
    if overrides:
        settings = settings.model_copy(update=overrides)
    option_overrides: dict[str, Any] = {}
    if channels:
        option_overrides["channels"] = channels
    if language is not None:
        option_overrides["language"] = language or None
    options = TranscribeOptions.from_settings(settings, **option_overrides)
    loaded = get_model(ModelConfig.from_settings(settings))
    entries: list[dict[str, Any]] = []
    failures = 0
    with count_progress("transcribing", total=len(files)) as counter:
        for path in files:
            counter.describe(f"transcribing {path.name}")
            try:
                result = transcribe_file(path, options, loaded, settings)
            except TranscriberError as exc:
                failures += 1
                # One line per failed file, however long the path: scripts grep for it.
                err.print(
                    f"{path}: {exc} ({exc.category})", style="red", markup=False, soft_wrap=True
                )
                entries.append(
                    {"file": str(path), "error": str(exc), "error_category": exc.category}
                )
            else:
                if fmt == "json":
                    entries.append(
                        {"file": str(path), "error": None, **to_json_dict(result, words=words)}
                    )
                else:
                    text = render(result, fmt, words=words)  # type: ignore[arg-type]
                    _emit(path, fmt, text, output_dir, many=len(files) > 1)
            counter.advance()
    if fmt == "json":
        document = json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
        if output_dir:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "transcripts.json").write_text(document, encoding="utf-8")
        else:
            click.echo(document, nl=False)
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} files failed")


def _emit(path: Path, fmt: str, text: str, output_dir: Path | None, *, many: bool) -> None:
    if output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / f"{path.stem}.{fmt}").write_text(text, encoding="utf-8")
    else:
        if many:
            click.echo(f"==> {path} <==")
        click.echo(text, nl=not text.endswith("\n"))


@main.command("export")
@click.argument("job_id", type=int)
@click.option("--format", "fmt", type=_FORMAT_CHOICE, default="srt", show_default=True)
@click.option("--words", is_flag=True, help="Include word timings (JSON).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@friendly_errors
def export_job(job_id: int, fmt: str, words: bool, output: Path | None) -> None:
    """Print (or write) the transcript of job JOB_ID as srt, vtt, json, txt or tsv; json
    also lists the sensor readings said in it (mentions)."""

    with Session(migrated_engine()) as session:
        result = load_transcription(session, job_id)
        # Only JSON has a place for the readings said: the other formats skip the query.
        mentions = load_spoken_readings(session, job_id) if fmt == "json" else None
    if result is None:
        raise click.ClickException(f"job {job_id} has no transcript (yet)")
    text = render(result, fmt, words=words, mentions=mentions)  # type: ignore[arg-type]
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=not text.endswith("\n"))


# --- readings said ------------------------------------------------------------------------


@main.group("mentions")
def mentions_group() -> None:
    """The sensor readings said in stored transcripts (transcript_mentions)."""


@mentions_group.command("rebuild")
@click.option("--facility", metavar="CODE", help="Only audio placed at this facility.")
@click.option(
    "--since",
    callback=_parse_start,
    metavar="DATE",
    help="Only audio recorded at or after DATE (ISO 8601; UTC without an offset).",
)
@friendly_errors
def mentions_rebuild(facility: str | None, since: datetime | None) -> None:
    """Find the readings said in stored transcripts again, with the sensors and
    TRANSCRIBER_READING_TOLERANCES of now (after sensors were added or renamed).

    Every stored transcript (narrowed by the options) gets its mentions replaced, each in
    a transaction of its own; running it again gives the same rows.
    """
    engine = migrated_engine()
    transcript_ids = transcripts_to_rebuild(engine, facility=facility, since=since)
    with count_progress("rebuilding mentions", total=len(transcript_ids)) as counter:
        result = rebuild(engine, transcript_ids, get_settings().tolerance_by_kind, counter.advance)
    err.print(result.summary(), soft_wrap=True)


# --- the service --------------------------------------------------------------------------


def _publisher() -> Callable[[Sequence[int]], None]:
    # The one place the library side reaches into the Celery shell: publishing needs the
    # Celery app, and transcriber/ itself never imports Celery.
    from workers.tasks import publish

    return publish


@main.command("watch")
@click.option(
    "--wait",
    type=click.IntRange(1, 20),
    default=20,
    show_default=True,
    help="SQS long-poll seconds.",
)
@friendly_errors
def watch(wait: int) -> None:
    """Turn the bucket's S3 event notifications (from TRANSCRIBER_SQS_QUEUE_URL) into jobs,
    and run the sweeper that republishes jobs the queue lost. Stops cleanly on Ctrl-C."""
    import logging
    import signal
    import threading

    from transcriber import sweeper
    from transcriber.broker_queue import redis_queue
    from transcriber.ingest.watch import Watcher

    settings = get_settings()
    if not settings.sqs_queue_url:
        raise click.ClickException("TRANSCRIBER_SQS_QUEUE_URL is not set: nothing to watch")
    # A long-running service: what it registers, publishes and recovers from is worth a
    # timestamped line (the one-shot commands only print their warnings).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    engine = migrated_engine()
    publish = _publisher()
    # The sweeper compares the broker's queue with the database: a queue lost with the broker
    # is published again at the next sweep (on Redis; elsewhere by age, see jobs.sweep).
    broker = redis_queue(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    watcher = Watcher(
        settings,
        engine,
        publish,
        sweep=lambda: sweeper.sweep(engine, settings, publish, broker),
        wait_time_seconds=wait,
    )
    err.print(
        f"watching {settings.sqs_queue_url} for s3://{settings.s3_bucket}/{settings.s3_prefix}"
    )
    every = f"every {settings.sweep_interval_seconds} s"
    err.print(
        f"the sweeper compares the queued jobs with Redis queue {settings.queue!r} {every}"
        if broker is not None
        else f"the sweeper publishes jobs queued over {settings.requeue_after_seconds} s "
        f"again {every} (a broker other than Redis cannot be compared)"
    )
    watcher.run(stop)
    err.print("watcher stopped")


@main.command("scan")
@click.option("--prefix", help="Only keys under this prefix (default: TRANSCRIBER_S3_PREFIX).")
@friendly_errors
def scan_bucket(prefix: str | None) -> None:
    """Register every object of the bucket not yet known (events that were missed); safe
    to run any time, as often as wanted."""
    from transcriber.ingest.scan import scan
    from transcriber.storage import s3_client

    settings = get_settings()
    engine = migrated_engine()
    with count_progress(f"scanning s3://{settings.s3_bucket}", None, "listed") as counter:
        result = scan(
            s3_client(settings),
            engine,
            settings,
            _publisher(),
            prefix=prefix,
            progress=counter.advance,
        )
    err.print(
        f"listed {result.listed:,} objects; registered {result.registered:,} new; "
        f"{result.skipped:,} known already or not audio"
    )


# --- first run ----------------------------------------------------------------------------


@main.command("up")
@click.option(
    "--var-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var"),
    show_default=True,
    help="Where the database, logs and embedded.env go.",
)
@friendly_errors
def up(var_dir: Path) -> None:
    """Run the whole service on this machine: SQLite, Redis, an S3+SQS emulator, a worker
    and the watcher. Ctrl-C stops everything."""
    import signal
    import threading

    from transcriber.embedded import EmbeddedStack

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with EmbeddedStack(var_dir) as stack:
        settings = stack.settings
        err.print(
            f"[bold green]up[/bold green]: S3+SQS {settings.s3_endpoint_url}, bucket "
            f"{settings.s3_bucket}, database {var_dir / 'transcriber.db'}, "
            f"logs {var_dir / 'logs'}\n"
            f"In another shell:  set -a; . {var_dir / 'embedded.env'}; set +a\n"
            "  transcriber put note.wav --facility plant-a --sensor PT-1\n"
            '  transcriber sql "SELECT key, text FROM latest_transcripts"\n'
            "  celery -A workers transcriber status\n"
            "Ctrl-C stops everything."
        )
        while not stop.wait(1.0):
            dead = stack.dead_children()
            if dead:
                raise click.ClickException(f"{', '.join(dead)} stopped; see {var_dir / 'logs'}")
    err.print("stopped")


@main.command("demo")
@click.option(
    "--var-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
)
@friendly_errors
def demo(var_dir: Path) -> None:
    """The whole job once on the embedded stack: sensor data, four voice notes near its
    anomalies, transcripts joined to readings (what `make demo` runs)."""
    import sys

    from rich.console import Console

    from transcriber.demo import run

    # A pipe or CI log has no width; give the result table room anyway.
    console = Console(width=None if sys.stdout.isatty() else 140)
    if not run(var_dir, console):
        raise click.ClickException("the demo did not complete")


@main.command("put")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--facility", help="Facility code (S3 metadata `facility`; also in the key).")
@click.option("--sensor", help="Sensor code (S3 metadata `sensor`; also in the key).")
@click.option("--recorded-at", help="When the recording started, ISO 8601 (default: now).")
@friendly_errors
def put(
    files: tuple[Path, ...], facility: str | None, sensor: str | None, recorded_at: str | None
) -> None:
    """Upload audio FILES to the configured bucket with facility, sensor and time metadata
    (key: S3_PREFIX/FACILITY/SENSOR/FILE); works against AWS S3 as well."""

    from transcriber import storage

    settings = get_settings()
    metadata = {k: v for k, v in (("facility", facility), ("sensor", sensor)) if v}
    if recorded_at:
        try:
            when = datetime.fromisoformat(recorded_at)
        except ValueError as exc:
            raise click.BadParameter(
                f"{recorded_at!r} is not ISO 8601", param_hint="--recorded-at"
            ) from exc
        metadata["recorded-at"] = as_utc(when).isoformat()
    client = storage.s3_client(settings)
    folder = "/".join(part for part in (facility, sensor) if part)
    for path in files:
        key = settings.s3_prefix + (f"{folder}/" if folder else "") + path.name
        info = storage.put(client, settings.s3_bucket, key, path, metadata)
        version = f" (version {info.version_id})" if info.version_id else ""
        click.echo(f"s3://{settings.s3_bucket}/{key}{version}")


@main.command("sql")
@click.argument("query")
@click.option("--limit", type=click.IntRange(1, 100_000), default=200, show_default=True)
@friendly_errors
def sql(query: str, limit: int) -> None:
    """Run QUERY on a read-only connection and print the result as a table."""
    from rich.table import Table
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError, OperationalError

    from transcriber.db import read_only_engine

    engine = read_only_engine(get_settings().database_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(text(query))
            if not result.returns_rows:
                raise click.ClickException("the query returned no rows to show")
            table = Table(*result.keys())
            rows = result.fetchmany(limit)
            for row in rows:
                table.add_row(*("NULL" if v is None else str(v) for v in row))
    except OperationalError:
        raise  # no database, or SQLite refusing a write: friendly_errors says which
    except DBAPIError as exc:  # bad SQL, or PostgreSQL refusing a write
        raise click.ClickException(str(exc.orig).strip().splitlines()[0]) from exc
    finally:
        engine.dispose()
    Console().print(table)
    err.print(
        f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
        + (" (limit reached)" if len(rows) == limit else "")
    )
