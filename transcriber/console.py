"""What the commands print besides their output: one clear line for an error a user can
cause, and progress bars on standard error. Shared by ``transcriber`` (:mod:`transcriber.cli`)
and ``celery -A workers transcriber`` (:mod:`workers.cli`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import ParamSpec, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy.exc import OperationalError

from transcriber.config import get_settings, redact_url
from transcriber.errors import NotMigrated, SensorDataError, TranscriberError

P = ParamSpec("P")
R = TypeVar("R")

err = Console(stderr=True)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause (bad settings, no database, bad files) into one
    clear line and exit status 1, instead of a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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
        except TranscriberError as exc:
            raise click.ClickException(f"{exc} ({exc.category})") from exc

    return wrapper


@contextmanager
def byte_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error over ``total`` bytes; yields the function to call
    with each number of bytes done."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@dataclass(frozen=True)
class Counter:
    """One counting progress display: advance it, or change what it says it is doing."""

    progress: Progress
    task: TaskID

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text)


@contextmanager
def count_progress(label: str, total: int | None, unit: str = "done") -> Iterator[Counter]:
    """A count on standard error: with ``total`` a bar and ``done/total``; without, the
    count so far (``12,000 listed``)."""
    columns: tuple[ProgressColumn, ...] = (
        (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
        if total is not None
        else (TextColumn("{task.description}"), TextColumn(f"{{task.completed:,}} {unit}"))
    )
    with Progress(*columns, console=err, transient=True) as progress:
        yield Counter(progress, progress.add_task(label, total=total))
