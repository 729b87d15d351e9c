"""The ``transcriber`` command."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from transcriber import __version__

P = ParamSpec("P")
R = TypeVar("R")

err = Console(stderr=True)


def _friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause (bad settings, no database, bad files) into one
    clear line and exit status 1, instead of a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from sqlalchemy.exc import OperationalError

        from transcriber.config import get_settings, redact_url
        from transcriber.migrate import NotMigrated
        from transcriber.sensors import SensorDataError

        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            problems = "; ".join(
                f"TRANSCRIBER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise click.ClickException(f"invalid settings: {problems}") from exc
        except OperationalError as exc:
            url = redact_url(get_settings().database_url)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise click.ClickException(f"cannot use the database {url}: {reason}") from exc
        except NotMigrated as exc:
            raise click.ClickException(str(exc)) from exc
        except SensorDataError as exc:
            raise click.ClickException(f"{exc}. Nothing was loaded.") from exc

    return wrapper


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
@_friendly_errors
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from transcriber import migrate
    from transcriber.config import get_settings, redact_url

    url = get_settings().database_url
    migrate.upgrade(url, revision)
    err.print(f"database {redact_url(url)} is at revision {migrate.current_revision(url)}")


@db.command("downgrade")
@click.argument("revision")
@_friendly_errors
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION; 'base' removes every table and view."""
    from transcriber import migrate
    from transcriber.config import get_settings, redact_url

    url = get_settings().database_url
    migrate.downgrade(url, revision)
    current = migrate.current_revision(url) or "base (empty)"
    err.print(f"database {redact_url(url)} is at revision {current}")


@db.command("current")
@_friendly_errors
def db_current() -> None:
    """Print the database's revision, and whether it is the newest."""
    from transcriber import migrate
    from transcriber.config import get_settings

    url = get_settings().database_url
    current = migrate.current_revision(url)
    head = migrate.head_revision(url)
    state = "up to date" if current == head else f"behind; newest is {head}"
    click.echo(f"{current or 'base (not migrated)'} ({state})")


# --- sensors ------------------------------------------------------------------------------


@main.group()
def sensors() -> None:
    """Load facilities, sensors and readings (the data transcripts join to)."""


@contextmanager
def _byte_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _load(paths: list[Path]) -> None:
    from transcriber.db import get_engine
    from transcriber.migrate import require_migrated
    from transcriber.sensors import load_files

    engine = get_engine()
    require_migrated(engine)
    started = time.perf_counter()
    with _byte_progress(sum(p.stat().st_size for p in paths), "loading") as advance:
        result = load_files(engine, paths, advance)
    err.print(
        f"loaded {result.facilities:,} facilities, {result.sensors:,} sensors and "
        f"{result.readings:,} readings in {time.perf_counter() - started:.1f} s"
    )


@sensors.command("load")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@_friendly_errors
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
@_friendly_errors
def sensors_demo_data(days: int, start: datetime | None, seed: int, out: Path | None) -> None:
    """Generate a synthetic data set: 3 facilities, 20 sensors, minute readings with daily
    cycles, noise and a few anomalies; load it (or write it with --out)."""
    from transcriber import demo_data

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
