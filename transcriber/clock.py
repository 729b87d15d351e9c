"""Time in one zone: every time this package stores or compares is aware and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive time is taken to be UTC already (as S3 and SQLite give it)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
