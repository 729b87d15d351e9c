"""From object versions to job rows: both ways audio is found end in :func:`register`.

The watcher (:mod:`transcriber.ingest.watch`) reads S3 event notifications from SQS, and a
scan (:mod:`transcriber.ingest.scan`) lists the bucket to find what events missed.
Registration is idempotent — one ``audio_objects`` row per object version, whatever the number
of events, scans or redeliveries — and creates one ``transcription_jobs`` row per new version.
Callers publish the returned job ids only after their transaction has committed
(:func:`transcriber.jobs.publish_after_commit`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from transcriber.bulk_sql import chunks, custom_plans, insert_many, table_of
from transcriber.clock import as_utc, utc_now
from transcriber.codes import CodeIds
from transcriber.config import Settings
from transcriber.placement import object_values, parse_time, place
from transcriber.schema import AudioObject, TranscriptionJob
from transcriber.storage import ObjectInfo

log = logging.getLogger(__name__)

_SEQUENCER = re.compile(r"[0-9A-Fa-f]{1,64}")


@dataclass
class Registered:
    inserted: int = 0
    queued: list[int] = field(default_factory=list)


def register(
    session: Session, objects: Sequence[tuple[ObjectInfo, str | None]], settings: Settings
) -> list[int]:
    """Record object versions and their jobs in the caller's transaction.

    ``objects`` pairs each version's facts with its event sequencer (None from a scan). A
    version already recorded is left alone; a new one gets one job, ``queued`` — or
    ``superseded`` when a newer version of the same key is already known. A new version
    supersedes the still-queued jobs of the older versions of its key. Returns the ids of
    the jobs created ``queued``: publish them once the transaction has committed.
    """
    return register_batch(session, objects, settings).queued


def register_batch(
    session: Session, objects: Sequence[tuple[ObjectInfo, str | None]], settings: Settings
) -> Registered:
    # A batch costs a few statements whatever its size (multi-row INSERTs, one lookup each
    # of the codes and of the keys' older versions), where one by one it took three or more
    # round trips per object. The outcome is the same as registering the objects one after
    # the other, in order.
    firsts: dict[tuple[str, str, str, str], tuple[ObjectInfo, str | None]] = {}
    for info, raw_sequencer in objects:
        # A version named twice keeps its first sighting, as one-by-one registration would.
        identity = (info.bucket, info.key, info.version_id, info.etag)
        firsts.setdefault(identity, (info, _clean_sequencer(raw_sequencer)))
    placed = [
        (info, sequencer, place(info.key, info.metadata, info.last_modified, settings))
        for info, sequencer in firsts.values()
    ]
    custom_plans(session)
    codes = CodeIds(session, settings.auto_register_sensors)
    codes.prefetch([(p.facility_code, p.sensor_code) for _, _, p in placed])
    rows = [
        _NewObject(
            object_values(info, seq, placement, codes),
            _Age(seq, as_utc(info.last_modified)),
        )
        for info, seq, placement in placed
    ]
    inserted = _insert_objects(session, rows)
    return Registered(inserted=len(inserted), queued=_insert_jobs(session, inserted))


@dataclass
class _NewObject:
    """One object version to record: its ``audio_objects`` values, and its age."""

    values: dict[str, Any]
    age: _Age
    id: int = 0

    @property
    def name(self) -> tuple[str, str]:
        return self.values["bucket"], self.values["key"]


def _insert_objects(session: Session, objects: Sequence[_NewObject]) -> list[_NewObject]:
    """Insert the versions not yet recorded; returns those, in order, with their ids.

    The rows go in in the order given, so ids follow the order of arrival as they did one by
    one: ``latest_transcripts`` takes a key's highest id for its newest version.
    """
    if not objects:
        return []
    # Only the rows actually inserted come back, in no promised order: they are matched by
    # the unique version, not by position.
    rows = insert_many(
        session,
        table_of(AudioObject),
        [obj.values for obj in objects],
        returning=("id", "bucket", "key", "version_id", "etag"),
        unique=("bucket", "key", "version_id", "etag"),
    )
    inserted = {
        (bucket, key, version_id, etag): audio_id
        for audio_id, bucket, key, version_id, etag in rows
    }
    new: list[_NewObject] = []
    for obj in objects:
        v = obj.values
        audio_id = inserted.get((v["bucket"], v["key"], v["version_id"], v["etag"]))
        if audio_id is not None:
            obj.id = audio_id
            new.append(obj)
    return new


def _insert_jobs(session: Session, objects: Sequence[_NewObject]) -> list[int]:
    """Add the new versions' jobs; returns the ids of those queued.

    Each version is compared with the versions of its key recorded before it — those of
    earlier calls and those earlier in ``objects`` — exactly as if they came one by one: a
    version older than one of them is not queued (superseded at once); otherwise it
    supersedes their still-queued jobs.
    """
    if not objects:
        return []
    now = utc_now()
    earlier = _earlier_versions(session, objects)
    late = {
        "status": "superseded",
        "finished_at": now,
        "error_category": "superseded",
        "error_message": "a newer version of the object was registered before this one",
    }
    overwritten = late | {
        "error_message": "the object was overwritten by a newer version before this ran"
    }
    queued: dict[str, Any] = {
        "status": "queued",
        "finished_at": None,
        "error_category": None,
        "error_message": None,
    }
    jobs: list[dict[str, Any]] = []
    # Per key: the ages of the versions seen so far, and the indexes in ``jobs`` of the
    # queued jobs among those of this call.
    ages = {name: [age for _, age in found] for name, found in earlier.items()}
    queued_here: dict[tuple[str, str], list[int]] = {}
    supersede: set[int] = set()
    for obj in objects:
        others = ages.setdefault(obj.name, [])
        if any(obj.age.older_than(other) for other in others):
            log.info("s3://%s/%s: an older version arrived late; not queued", *obj.name)
            jobs.append({"audio_object_id": obj.id, **late})
        else:
            supersede.update(audio_id for audio_id, _ in earlier.get(obj.name, ()))
            for index in queued_here.get(obj.name, ()):
                jobs[index].update(overwritten)
            queued_here[obj.name] = [len(jobs)]
            jobs.append({"audio_object_id": obj.id, **queued})
        others.append(obj.age)
    for ids in chunks(sorted(supersede)):
        session.execute(
            update(TranscriptionJob)
            .where(
                TranscriptionJob.audio_object_id.in_(ids),
                TranscriptionJob.status == "queued",
            )
            .values(overwritten)
            .execution_options(synchronize_session=False)
        )
    rows = insert_many(
        session,
        table_of(TranscriptionJob),
        [job | {"options": {}} for job in jobs],
        returning=("id", "audio_object_id"),
    )
    job_ids = {audio_id: job_id for job_id, audio_id in rows}
    return [job_ids[job["audio_object_id"]] for job in jobs if job["status"] == "queued"]


def _earlier_versions(
    session: Session, objects: Sequence[_NewObject]
) -> dict[tuple[str, str], list[tuple[int, _Age]]]:
    """The versions recorded before this call of the keys of ``objects``, by key."""
    new_ids = {obj.id for obj in objects}
    names: dict[str, set[str]] = {}
    for obj in objects:
        names.setdefault(obj.name[0], set()).add(obj.name[1])
    # First only the ids: most keys have no other version, and reading (and decoding) the
    # metadata of the rows just inserted cost more than inserting them.
    older: dict[int, tuple[str, str]] = {}
    for bucket, keys in names.items():
        for chunk in chunks(sorted(keys)):
            rows = session.execute(
                select(AudioObject.id, AudioObject.key).where(
                    AudioObject.bucket == bucket, AudioObject.key.in_(chunk)
                )
            )
            older.update(
                (audio_id, (bucket, key)) for audio_id, key in rows if audio_id not in new_ids
            )
    found: dict[tuple[str, str], list[tuple[int, _Age]]] = {}
    for ids in chunks(sorted(older)):
        versions = session.execute(
            select(AudioObject.id, AudioObject.sequencer, AudioObject.meta)
            .where(AudioObject.id.in_(ids))
            .order_by(AudioObject.id)
        )
        for audio_id, sequencer, meta in versions:
            found.setdefault(older[audio_id], []).append((audio_id, _Age.of(sequencer, meta)))
    return found


@dataclass(frozen=True)
class _Age:
    """How new a version is: S3's event sequencer when both sides have one, else the
    LastModified time. A tie counts as newer for the version registered later."""

    sequencer: str | None
    last_modified: datetime | None

    @classmethod
    def of(cls, sequencer: str | None, meta: Mapping[str, Any] | None) -> _Age:
        stamp = (meta or {}).get("last_modified")
        return cls(sequencer, parse_time(stamp) if isinstance(stamp, str) else None)

    def older_than(self, other: _Age) -> bool:
        if self.sequencer and other.sequencer:
            # Sequencers are hex numbers of varying length: compare them at equal length.
            width = max(len(self.sequencer), len(other.sequencer))
            return self.sequencer.upper().zfill(width) < other.sequencer.upper().zfill(width)
        if self.last_modified and other.last_modified:
            return self.last_modified < other.last_modified
        return False


def _clean_sequencer(value: str | None) -> str | None:
    return value if value and _SEQUENCER.fullmatch(value) else None
