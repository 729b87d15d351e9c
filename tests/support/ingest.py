"""Helpers of the ingest and watcher tests: S3 event records as AWS writes them, uploads,
the jobs and rows a database holds, and a publish callable that records what it was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from transcriber.config import Settings
from transcriber.schema import AudioObject, TranscriptionJob
from transcriber.storage import s3_client


def s3_record(key: str, **obj: Any) -> dict[str, Any]:
    """One record of an S3 event notification, as AWS writes it."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2026-03-14T10:15:02.123Z",
        "eventName": obj.pop("event_name", "ObjectCreated:Put"),
        "s3": {
            "bucket": {"name": "audio-bucket", "arn": "arn:aws:s3:::audio-bucket"},
            "object": {"key": key, "size": 1234, "eTag": "0123abcd", **obj},
        },
    }


def jobs_by_key(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    """(key, etag, status, error_category) of every job, oldest first."""
    with Session(engine) as session:
        rows = session.execute(
            select(
                AudioObject.key,
                AudioObject.etag,
                TranscriptionJob.status,
                TranscriptionJob.error_category,
            )
            .join(AudioObject, AudioObject.id == TranscriptionJob.audio_object_id)
            .order_by(TranscriptionJob.id)
        )
        return [(key, etag, status, category) for key, etag, status, category in rows]


def count(engine: Engine, model: type[Any]) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def upload(
    settings: Settings, key: str, body: bytes = b"RIFF", metadata: dict[str, str] | None = None
) -> None:
    s3_client(settings).put_object(
        Bucket=settings.s3_bucket, Key=key, Body=body, Metadata=metadata or {}
    )


class Recorder:
    """A publish callable that checks, when called, that the jobs are already committed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[list[int]] = []

    def __call__(self, job_ids: Sequence[int]) -> None:
        # A connection of its own sees only committed rows.
        with Session(self.engine) as session:
            visible = session.scalars(
                select(TranscriptionJob.id).where(
                    TranscriptionJob.id.in_(job_ids), TranscriptionJob.status == "queued"
                )
            ).all()
        assert sorted(visible) == sorted(job_ids), "published before the commit"
        self.calls.append(list(job_ids))

    @property
    def ids(self) -> list[int]:
        return [job_id for call in self.calls for job_id in call]
