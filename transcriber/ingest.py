"""From the bucket to job rows: event parsing, key filtering, placement, registration, scan.

Both ways audio is found end in :func:`register`: the watcher (``transcriber watch``) reads S3
event notifications from SQS, and :func:`scan` lists the bucket to find what events missed.
Registration is idempotent — one ``audio_objects`` row per object version, whatever the number
of events, scans or redeliveries — and creates one ``transcription_jobs`` row per new version.
Callers publish the returned job ids only after their transaction has committed.

``audio_objects.metadata`` holds a JSON document of this shape (every value a string or null)::

    {
      "facility": "rotterdam-north",     # facility code as placed, even when no such facility
      "sensor": "PT-201",                # sensor code as placed (null when none)
      "last_modified": "2026-03-14T10:15:02+00:00",  # S3 LastModified of this version
      "s3_metadata": {"facility": "…", "recorded-at": "…", "operator": "…"}
    }

``s3_metadata`` is null for an object a scan found until its worker has downloaded it
(:func:`place_downloaded`); then, as for one announced by an event, the object's user
metadata after sanitising: keys lower-case, control and
other non-printable characters removed, text that is not valid UTF-8 replaced, at most 32
entries of at most 1024 characters each. Facility and sensor ids stay NULL when their codes
are unknown (unless ``AUTO_REGISTER_SENSORS``); the codes in the document keep the placement.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote_plus

from sqlalchemy import JSON, Engine, Table, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from transcriber.config import Settings
from transcriber.errors import PermanentError
from transcriber.schema import AudioObject, Base, Facility, Sensor, TranscriptionJob
from transcriber.storage import (
    Downloaded,
    ListedObject,
    ObjectInfo,
    StorageAccessDenied,
    head,
    iter_current_versions,
    iter_objects,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

RecordedAtSource = Literal["metadata", "key", "last_modified"]
Publish = Callable[[Sequence[int]], None]
_T = TypeVar("_T")

# Codes the loader accepts (transcriber.sensors): only these are created automatically, so
# that a hostile key or metadata value can never become a facility of its own.
_VALID_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_CODE_MAX = 64
_META_ITEMS_MAX = 32
_META_NAME_MAX = 128
_META_VALUE_MAX = 1024
_TIME_TEXT_MAX = 64
# Recording times outside these are typos or hostile, and are ignored like any invalid one.
# The upper bound also matters: at datetime.max (9999-12-31) adding a segment's offset to the
# recording time overflows, and a job with perfectly good audio would fail as "internal".
_TIME_MIN = datetime(1900, 1, 1, tzinfo=UTC)
_TIME_MAX = datetime(3000, 1, 1, tzinfo=UTC)
_SEQUENCER = re.compile(r"[0-9A-Fa-f]{1,64}")
_SCAN_BATCH = 500
# Values per IN (...) list: well below SQLite's limit of 32,766 parameters per statement.
_IN_LIST_MAX = 500
_HEAD_THREADS = 8


class BadEvent(PermanentError):
    """An SQS message that is not an S3 event notification (the watcher logs and drops it)."""

    category = "bad_event"


@dataclass(frozen=True)
class ObjectEvent:
    """One ``ObjectCreated`` record of an S3 event notification."""

    bucket: str
    key: str
    version_id: str
    etag: str
    size: int
    sequencer: str | None
    event_time: datetime | None


@dataclass(frozen=True)
class Placement:
    """Where and when a recording was made, and where its time came from."""

    facility_code: str | None
    sensor_code: str | None
    recorded_at: datetime
    source: RecordedAtSource


@dataclass(frozen=True)
class ScanResult:
    """``listed``: objects in the listing; ``registered``: new object versions recorded;
    ``skipped``: the rest (keys not wanted, versions already known, objects gone before
    they could be read)."""

    listed: int = 0
    registered: int = 0
    skipped: int = 0


# --- Events -------------------------------------------------------------------------------


def parse_event_message(body: str) -> list[ObjectEvent]:
    """The ``ObjectCreated`` records of one SQS message body.

    Takes S3's event notification JSON as S3 delivers it to SQS, or wrapped in an SNS
    envelope (``{"Type": "Notification", "Message": "<the S3 JSON>"}``). ``s3:TestEvent``
    and records of other event types give no events. Keys arrive URL-encoded with ``+`` for
    a space and are decoded. Raises :class:`BadEvent` for anything that is not such a message.
    """
    document = _json_object(body, "the message")
    if document.get("Type") == "Notification" and "Message" in document:
        message = document["Message"]
        if not isinstance(message, str):
            raise BadEvent("the SNS envelope's Message is not a string")
        document = _json_object(message, "the SNS envelope's Message")
    if document.get("Event") == "s3:TestEvent":
        return []
    records = document.get("Records")
    if records is None:
        return []
    if not isinstance(records, list):
        raise BadEvent("Records is not a list")
    return [event for record in records if (event := _object_event(record)) is not None]


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadEvent(f"{what} is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(document, dict):
        raise BadEvent(f"{what} is not a JSON object")
    return document


def _object_event(record: object) -> ObjectEvent | None:
    if not isinstance(record, dict):
        raise BadEvent("a record is not a JSON object")
    name = record.get("eventName")
    if not isinstance(name, str) or not name.removeprefix("s3:").startswith("ObjectCreated:"):
        return None
    try:
        bucket = record["s3"]["bucket"]["name"]
        obj = record["s3"]["object"]
        raw_key = obj["key"]
        size = int(obj.get("size") or 0)
        version_id = obj.get("versionId") or ""
        etag = obj.get("eTag") or ""
        sequencer = obj.get("sequencer")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadEvent(f"an ObjectCreated record lacks {exc}") from exc
    if not all(isinstance(v, str) for v in (bucket, raw_key, version_id, etag)):
        raise BadEvent("an ObjectCreated record's bucket, key, version or ETag is not a string")
    return ObjectEvent(
        bucket=bucket,
        # S3 URL-encodes keys in events, spaces as "+"; invalid UTF-8 escapes become U+FFFD
        # (such a key then matches no object, and a scan finds the real one).
        key=unquote_plus(raw_key),
        version_id="" if version_id == "null" else version_id,
        etag=etag.strip('"'),
        size=size,
        sequencer=sequencer if isinstance(sequencer, str) else None,
        event_time=_event_time(record.get("eventTime")),
    )


def _event_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    return parse_time(value)


def wanted(key: str, settings: Settings) -> bool:
    """Whether ``key`` is audio to transcribe: under ``S3_PREFIX``, ending in one of
    ``S3_SUFFIXES`` (case-insensitive; empty: any), and not a folder marker."""
    # NUL cannot be stored in PostgreSQL text; S3 allows it in keys, we do not.
    if not key or key.endswith("/") or "\x00" in key or not key.startswith(settings.s3_prefix):
        return False
    suffixes = tuple(s.strip().lower() for s in settings.s3_suffixes.split(",") if s.strip())
    return not suffixes or key.lower().endswith(suffixes)


# --- Placement ----------------------------------------------------------------------------


def place(
    key: str, metadata: Mapping[str, str], last_modified: datetime, settings: Settings
) -> Placement:
    """Facility, sensor and recording time of an object.

    Each comes from the object's user metadata (``facility``, ``sensor``, ``recorded-at``)
    when present and valid, else from ``KEY_PATTERN`` applied to the key after ``S3_PREFIX``;
    the time falls back to ``last_modified``. Codes are cleaned (see :func:`clean_code`).
    """
    fields = key_fields(key, settings)
    facility = clean_code(metadata.get("facility")) or clean_code(fields.get("facility"))
    sensor = clean_code(metadata.get("sensor")) or clean_code(fields.get("sensor"))
    stated = metadata.get("recorded-at") or metadata.get("recorded_at")
    when = parse_time(stated) if stated else None
    if when is not None:
        return Placement(facility, sensor, when, "metadata")
    when = parse_time(fields["recorded_at"]) if "recorded_at" in fields else None
    if when is not None:
        return Placement(facility, sensor, when, "key")
    return Placement(facility, sensor, _utc(last_modified), "last_modified")


def key_fields(key: str, settings: Settings) -> dict[str, str]:
    """The fields ``KEY_PATTERN`` finds in ``key`` (after ``S3_PREFIX``); empty when the key
    does not match the pattern.

    Each field matches one or more characters other than ``/``, everything else in the
    pattern literally, and where a key could be split several ways the earlier fields take
    as much as they can: exactly what the regular expression ``(?P<field>[^/]+)`` per field
    would give. A field cannot hold ``/``, so each path segment of the key matches the
    pattern's segment in the same place, on its own. Keys are chosen by whoever can write
    to the bucket, and a backtracking regex over a segment with several fields takes
    seconds on a crafted 1,000-character key; so a regex matches a segment only where it
    has at most two fields (at worst segment length squared steps), and
    :func:`_match` (at most segment length × pattern parts steps, but ten times slower on
    ordinary keys) the others. A field named twice keeps its first value.
    """
    relative = key[len(settings.s3_prefix) :] if key.startswith(settings.s3_prefix) else key
    segments = relative.lstrip("/").split("/")
    matchers = _segment_matchers(settings.key_pattern)
    if len(segments) != len(matchers):
        return {}
    fields: dict[str, str] = {}
    for matcher, segment in zip(matchers, segments, strict=True):
        found = matcher(segment)
        if found is None:
            return {}
        for name, value in found:
            fields.setdefault(name, value)
    return fields


_Matcher = Callable[[str], list[tuple[str, str]] | None]


@lru_cache(maxsize=16)
def _segment_matchers(pattern: str) -> tuple[_Matcher, ...]:
    """For each path segment of ``pattern``, a function giving the ``(field, value)`` pairs
    it finds in a segment of a key, or None where the segment does not match."""
    return tuple(_segment_matcher(_tokens(segment)) for segment in pattern.split("/"))


def _segment_matcher(tokens: tuple[tuple[bool, str], ...]) -> _Matcher:
    names = [part for is_field, part in tokens if is_field]
    if len(names) > 2:

        def by_table(text: str) -> list[tuple[str, str]] | None:
            found = _match(tokens, text)
            return [(name, found[name]) for name in names] if found else None

        return by_table
    regex = re.compile("".join("([^/]+)" if is_field else re.escape(p) for is_field, p in tokens))

    def by_regex(text: str) -> list[tuple[str, str]] | None:
        found = regex.fullmatch(text)
        return list(zip(names, found.groups(), strict=True)) if found else None

    return by_regex


@lru_cache(maxsize=16)
def _tokens(pattern: str) -> tuple[tuple[bool, str], ...]:
    """The pattern as ``(is_field, text)`` parts: field names and the literal text between."""
    parts = re.split(r"{([^{}]*)}", pattern)
    # re.split with a group alternates: literal, field, literal, field, ..., literal.
    return tuple((index % 2 == 1, part) for index, part in enumerate(parts) if part)


def _match(tokens: Sequence[tuple[bool, str]], text: str) -> dict[str, str]:
    end = len(text)
    # fits[i][p]: tokens[i:] match text[p:] exactly; computed from the back.
    fits = [[False] * (end + 1) for _ in range(len(tokens) + 1)]
    fits[len(tokens)][end] = True
    for i in range(len(tokens) - 1, -1, -1):
        is_field, part = tokens[i]
        here, after = fits[i], fits[i + 1]
        for p in range(end - 1 if is_field else end, -1, -1):
            if is_field:
                # One more character of the field, then the rest (or more of the field).
                here[p] = text[p] != "/" and (after[p + 1] or here[p + 1])
            else:
                here[p] = text.startswith(part, p) and after[p + len(part)]
    if not fits[0][0]:
        return {}
    fields: dict[str, str] = {}
    p = 0
    for i, (is_field, part) in enumerate(tokens):
        if not is_field:
            p += len(part)
            continue
        stop = text.find("/", p)
        stop = end if stop < 0 else stop
        # The longest extent after which the rest still fits (greedy, as a regex would be).
        q = next(q for q in range(stop, p, -1) if fits[i + 1][q])
        fields.setdefault(part, text[p:q])
        p = q
    return fields


def parse_time(value: str) -> datetime | None:
    """An ISO 8601 time, basic (``20260314T101500Z``) or extended
    (``2026-03-14T10:15:00+01:00``), as aware UTC; no offset means UTC. None if invalid or
    outside the years 1900 to 2999."""
    value = value.strip()
    if not value or len(value) > _TIME_TEXT_MAX:
        return None
    try:
        parsed = _utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None
    return parsed if _TIME_MIN <= parsed < _TIME_MAX else None


def clean_code(value: str | None) -> str | None:
    """A facility or sensor code fit to store: printable characters only, trimmed, at most
    64 characters; None when nothing is left."""
    if value is None:
        return None
    return clean_text(value, _CODE_MAX) or None


def clean_text(value: str, limit: int) -> str:
    """``value`` safe for any column or JSON document: valid UTF-8 (lone surrogates
    replaced), no control or other non-printable characters (PostgreSQL rejects NUL), trimmed
    and cut to ``limit`` characters."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch for ch in value if ch.isprintable()).strip()[:limit]


def _clean_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for name, value in list(metadata.items())[:_META_ITEMS_MAX]:
        clean_name = clean_text(str(name).lower(), _META_NAME_MAX)
        if clean_name:
            cleaned[clean_name] = clean_text(str(value), _META_VALUE_MAX)
    return cleaned


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- Registration -------------------------------------------------------------------------


@dataclass
class _Registered:
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
    return _register(session, objects, settings).queued


def _register(
    session: Session, objects: Sequence[tuple[ObjectInfo, str | None]], settings: Settings
) -> _Registered:
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
    _custom_plans(session)
    codes = _Codes(session, settings.auto_register_sensors)
    codes.prefetch([placement for _, _, placement in placed])
    rows = [_new_object(info, seq, placement, codes) for info, seq, placement in placed]
    inserted = _insert_objects(session, rows)
    return _Registered(inserted=len(inserted), queued=_insert_jobs(session, inserted))


@dataclass
class _NewObject:
    """One object version to record: its ``audio_objects`` values, and its age."""

    values: dict[str, Any]
    age: _Age
    id: int = 0

    @property
    def name(self) -> tuple[str, str]:
        return self.values["bucket"], self.values["key"]


def _new_object(
    info: ObjectInfo, sequencer: str | None, placement: Placement, codes: _Codes
) -> _NewObject:
    facility_id = codes.facility_id(placement.facility_code)
    sensor_id = codes.sensor_id(facility_id, placement.sensor_code)
    last_modified = _utc(info.last_modified)
    document = {
        "facility": placement.facility_code,
        "sensor": placement.sensor_code,
        "last_modified": last_modified.isoformat(),
        # None until the object's metadata is read (see :func:`scan`).
        "s3_metadata": _clean_metadata(info.metadata) if info.metadata_read else None,
    }
    content_type = clean_text(info.content_type, 255) if info.content_type else None
    values = {
        "bucket": info.bucket,
        "key": info.key,
        "version_id": info.version_id,
        "etag": info.etag,
        "size_bytes": info.size_bytes,
        "content_type": content_type or None,
        "facility_id": facility_id,
        "sensor_id": sensor_id,
        "recorded_at": placement.recorded_at,
        "recorded_at_source": placement.source,
        "metadata": document,
        "sequencer": sequencer,
    }
    return _NewObject(values, _Age(sequencer, last_modified))


def place_downloaded(
    session: Session, audio: AudioObject, downloaded: Downloaded, settings: Settings
) -> bool:
    """Place again, now by its user metadata, an object that a scan registered from a
    listing (its ``s3_metadata`` still null), and record its content type; the download
    has brought both. Runs in the caller's transaction; returns whether anything changed
    (an object placed already is left alone)."""
    if "s3_metadata" not in audio.meta or audio.meta["s3_metadata"] is not None:
        return False
    info = ObjectInfo(
        bucket=audio.bucket,
        key=audio.key,
        version_id=audio.version_id,
        etag=audio.etag,
        size_bytes=audio.size_bytes,
        content_type=downloaded.content_type,
        last_modified=datetime.fromisoformat(audio.meta["last_modified"]),
        metadata=downloaded.metadata,
    )
    placement = place(info.key, info.metadata, info.last_modified, settings)
    codes = _Codes(session, settings.auto_register_sensors)
    values = _new_object(info, audio.sequencer, placement, codes).values
    placed = ("facility_id", "sensor_id", "recorded_at", "recorded_at_source", "content_type")
    session.execute(
        update(AudioObject)
        .where(AudioObject.id == audio.id)
        .values({AudioObject.meta: values["metadata"]} | {name: values[name] for name in placed})
    )
    return True


def _custom_plans(session: Session) -> None:
    """Have PostgreSQL plan this transaction's lookups for the values they are run with.

    psycopg prepares a statement once it has run five times, and PostgreSQL may then reuse
    one generic plan for it. For ``key IN (500 parameters)`` on a table whose statistics
    are stale (one a first scan is filling, or with autovacuum off) that plan compared every
    row of the bucket with every key one by one: a lookup of 500 keys grew from 5 ms to
    200 ms at 6,000 rows, and on with the table. Planning each run costs well under 1 ms.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def _table(model: type[Base]) -> Table:
    # Core inserts with column names as keys skip the ORM's per-row attribute translation.
    return Base.metadata.tables[model.__tablename__]


def _chunks(items: Sequence[_T], size: int = _IN_LIST_MAX) -> Iterator[Sequence[_T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def _insert_objects(session: Session, objects: Sequence[_NewObject]) -> list[_NewObject]:
    """Insert the versions not yet recorded; returns those, in order, with their ids.

    The rows go in in the order given, so ids follow the order of arrival as they did one by
    one: ``latest_transcripts`` takes a key's highest id for its newest version.
    """
    if not objects:
        return []
    # Only the rows actually inserted come back, in no promised order: they are matched by
    # the unique version, not by position.
    rows = _insert_many(
        session,
        _table(AudioObject),
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


def _insert_many(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: Sequence[str],
    unique: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (all with the same columns) in the order given, leaving out those
    that would repeat a row on the columns ``unique``; returns the columns ``returning`` of
    the rows inserted.

    On PostgreSQL in one statement whose values are one array per column, unnested: its
    text is the same whatever the number of rows. SQLAlchemy's multi-row INSERT
    ("insertmanyvalues") writes 500 rows as 6,500 placeholders, which psycopg parses
    afresh every time (it caches only short statements): a third of the time of a scan's
    registration went there. SQLite gets the multi-row INSERT.
    """
    if session.get_bind().dialect.name != "postgresql":
        statement = _upsert(session)(table)
        if unique:
            statement = statement.on_conflict_do_nothing(index_elements=list(unique))
        result = session.execute(statement.returning(*(table.c[c] for c in returning)), rows)
        return [tuple(row) for row in result]
    columns = list(rows[0])
    dialect = session.get_bind().dialect
    arrays: dict[str, list[Any]] = {}
    casts: list[str] = []
    for index, name in enumerate(columns):
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON):
            values = [None if v is None else json.dumps(v) for v in values]
        arrays[f"c{index}"] = values
        casts.append(f"CAST(:c{index} AS {column.type.compile(dialect=dialect)}[])")
    names = ", ".join(columns)
    conflict = f" ON CONFLICT ({', '.join(unique)}) DO NOTHING" if unique else ""
    statement = text(
        f"INSERT INTO {table.name} ({names}) "
        f"SELECT {names} FROM unnest({', '.join(casts)}) WITH ORDINALITY "
        f"AS given({names}, position) ORDER BY position{conflict} "
        f"RETURNING {', '.join(returning)}"
    )
    return [tuple(row) for row in session.execute(statement, arrays)]


def _insert_jobs(session: Session, objects: Sequence[_NewObject]) -> list[int]:
    """Add the new versions' jobs; returns the ids of those queued.

    Each version is compared with the versions of its key recorded before it — those of
    earlier calls and those earlier in ``objects`` — exactly as if they came one by one: a
    version older than one of them is not queued (superseded at once); otherwise it
    supersedes their still-queued jobs.
    """
    if not objects:
        return []
    now = datetime.now(UTC)
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
    for ids in _chunks(sorted(supersede)):
        session.execute(
            update(TranscriptionJob)
            .where(
                TranscriptionJob.audio_object_id.in_(ids),
                TranscriptionJob.status == "queued",
            )
            .values(overwritten)
            .execution_options(synchronize_session=False)
        )
    rows = _insert_many(
        session,
        _table(TranscriptionJob),
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
        for chunk in _chunks(sorted(keys)):
            rows = session.execute(
                select(AudioObject.id, AudioObject.key).where(
                    AudioObject.bucket == bucket, AudioObject.key.in_(chunk)
                )
            )
            older.update(
                (audio_id, (bucket, key)) for audio_id, key in rows if audio_id not in new_ids
            )
    found: dict[tuple[str, str], list[tuple[int, _Age]]] = {}
    for ids in _chunks(sorted(older)):
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


class _Codes:
    """Facility and sensor ids by code, looked up once per registration (and created when
    ``create`` is set and the code is one the sensor loader would accept)."""

    def __init__(self, session: Session, create: bool) -> None:
        self.session = session
        self.create = create
        self.facilities: dict[str, int | None] = {}
        self.sensors: dict[tuple[int, str], int | None] = {}

    def prefetch(self, placements: Sequence[Placement]) -> None:
        """Look up the codes of all ``placements`` at once: a query or two for a whole
        batch instead of one per code (codes still unknown are then created, where allowed,
        one by one as before)."""
        codes = {p.facility_code for p in placements if p.facility_code is not None}
        self._prefetch_facilities(sorted(codes - self.facilities.keys()))
        pairs: set[tuple[int, str]] = set()
        for p in placements:
            facility_id = self.facility_id(p.facility_code)
            if facility_id is not None and p.sensor_code is not None:
                pairs.add((facility_id, p.sensor_code))
        self._prefetch_sensors(sorted(pairs - self.sensors.keys()))

    def _prefetch_facilities(self, codes: Sequence[str]) -> None:
        for chunk in _chunks(codes):
            rows = self.session.execute(
                select(Facility.code, Facility.id).where(Facility.code.in_(chunk))
            )
            self.facilities.update((code, facility_id) for code, facility_id in rows)
            if not self.create:
                # Known to be unknown: facility_id() need not ask again.
                self.facilities.update((c, None) for c in chunk if c not in self.facilities)

    def _prefetch_sensors(self, pairs: Sequence[tuple[int, str]]) -> None:
        for chunk in _chunks(pairs):
            wanted = set(chunk)
            rows = self.session.execute(
                select(Sensor.facility_id, Sensor.code, Sensor.id).where(
                    Sensor.facility_id.in_({facility_id for facility_id, _ in chunk}),
                    Sensor.code.in_({code for _, code in chunk}),
                )
            )
            self.sensors.update(
                ((facility_id, code), sensor_id)
                for facility_id, code, sensor_id in rows
                if (facility_id, code) in wanted
            )
            if not self.create:
                self.sensors.update((pair, None) for pair in wanted if pair not in self.sensors)

    def facility_id(self, code: str | None) -> int | None:
        if code is None:
            return None
        if code not in self.facilities:
            found = self.session.scalar(select(Facility.id).where(Facility.code == code))
            if found is None and self.create and _VALID_CODE.fullmatch(code):
                self.session.execute(
                    _upsert(self.session)(Facility)
                    .values(code=code, name=code, timezone="UTC")
                    .on_conflict_do_nothing(index_elements=["code"])
                )
                found = self.session.scalar(select(Facility.id).where(Facility.code == code))
                log.info("created facility %r (AUTO_REGISTER_SENSORS)", code)
            self.facilities[code] = found
        return self.facilities[code]

    def sensor_id(self, facility_id: int | None, code: str | None) -> int | None:
        # A sensor code means something only at a facility.
        if facility_id is None or code is None:
            return None
        key = (facility_id, code)
        if key not in self.sensors:
            where = (Sensor.facility_id == facility_id) & (Sensor.code == code)
            found = self.session.scalar(select(Sensor.id).where(where))
            if found is None and self.create and _VALID_CODE.fullmatch(code):
                self.session.execute(
                    _upsert(self.session)(Sensor)
                    .values(facility_id=facility_id, code=code, kind="unknown", unit="")
                    .on_conflict_do_nothing(index_elements=["facility_id", "code"])
                )
                found = self.session.scalar(select(Sensor.id).where(where))
                log.info("created sensor %r (AUTO_REGISTER_SENSORS)", code)
            self.sensors[key] = found
        return self.sensors[key]


def _upsert(session: Session) -> Any:
    """The dialect's INSERT with ``ON CONFLICT`` (PostgreSQL and SQLite spell it the same)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


# --- Scan ---------------------------------------------------------------------------------


def scan(
    s3: S3Client,
    engine: Engine,
    settings: Settings,
    publish: Publish,
    prefix: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Register every wanted object of the bucket that is not yet known (reconciliation).

    Lists the current versions under ``prefix`` (default ``S3_PREFIX``), compares
    ``(key, ETag)`` with the database in batches of 500 keys and registers each batch's
    unknown objects in a transaction of its own, publishing its new jobs after the commit.
    Running it again registers nothing new. ``progress`` gets the number of objects listed
    since its last call. A publish that fails is logged, not raised: the jobs are
    committed, and the sweeper publishes queued jobs no worker started.

    A listing of versions gives each object's version id but not its user metadata: an
    object is placed by its key (or LastModified) and ``s3_metadata`` stays null until the
    worker downloads it and places it again (:func:`place_downloaded`). One request per
    object for the metadata would cap a scan at what S3 answers per second (a few hundred
    HEADs; 134 a second against the emulator on two cores, where a listing page brings
    1,000 objects). Without ``s3:ListBucketVersions`` the scan lists objects and reads each
    one's facts with a HEAD instead, and says so in the log.
    """
    prefix = settings.s3_prefix if prefix is None else prefix
    listed = registered = pending_progress = 0
    batch: list[ListedObject] = []
    # The stages overlap: while the pool HEADs the objects of one batch, this thread
    # registers and publishes the batch before it and lists the next page. In turn they
    # left the pool idle most of the time, and each stage waited on the others' round trips.
    ahead: list[Future[ObjectInfo | None]] = []
    pool = ThreadPoolExecutor(max_workers=_HEAD_THREADS, thread_name_prefix="scan-head")
    try:
        for obj in _listing(s3, settings.s3_bucket, prefix):
            listed += 1
            pending_progress += 1
            if wanted(obj.key, settings):
                batch.append(obj)
            if len(batch) >= _SCAN_BATCH:
                started = _start_batch(pool, s3, engine, settings, batch)
                registered += _finish_batch(engine, settings, publish, ahead)
                ahead, batch = started, []
            if progress and pending_progress >= 1000:
                progress(pending_progress)
                pending_progress = 0
        started = _start_batch(pool, s3, engine, settings, batch)
        registered += _finish_batch(engine, settings, publish, ahead)
        registered += _finish_batch(engine, settings, publish, started)
    finally:
        # On an error, the HEADs not yet begun are dropped rather than waited for.
        pool.shutdown(wait=True, cancel_futures=True)
    if progress and pending_progress:
        progress(pending_progress)
    return ScanResult(listed=listed, registered=registered, skipped=listed - registered)


def _listing(s3: S3Client, bucket: str, prefix: str) -> Iterator[ListedObject]:
    """The current versions under ``prefix``; or, where versions may not be listed, the
    objects (with no version ids: :func:`_start_batch` reads them with HEAD)."""
    versions = iter_current_versions(s3, bucket, prefix)
    try:
        first = next(versions, None)
    except StorageAccessDenied as exc:
        log.warning(
            "scan: %s; listing objects instead and reading each one's facts with a HEAD "
            "request, one object at a time (grant s3:ListBucketVersions for a faster scan)",
            exc,
        )
        yield from iter_objects(s3, bucket, prefix)
        return
    if first is not None:
        yield first
        yield from versions


def _start_batch(
    pool: ThreadPoolExecutor,
    s3: S3Client,
    engine: Engine,
    settings: Settings,
    batch: list[ListedObject],
) -> list[Future[ObjectInfo | None]]:
    """Look the batch up in the database and start the HEADs of the objects not known
    (where the listing did not give their version ids)."""
    if not batch:
        return []
    bucket = settings.s3_bucket
    with Session(engine) as session:
        _custom_plans(session)
        rows = session.execute(
            select(AudioObject.key, AudioObject.etag).where(
                AudioObject.bucket == bucket,
                AudioObject.key.in_({obj.key for obj in batch}),
            )
        )
        known = {(key, etag) for key, etag in rows}
    new = [obj for obj in batch if (obj.key, obj.etag) not in known]
    # boto3 clients are safe to share between threads.
    return [
        pool.submit(head, s3, bucket, obj.key) if obj.version_id is None else _listed(bucket, obj)
        for obj in new
    ]


def _listed(bucket: str, obj: ListedObject) -> Future[ObjectInfo | None]:
    """What the listing says of ``obj``, as the answer of a HEAD already made."""
    info = ObjectInfo(
        bucket=bucket,
        key=obj.key,
        version_id=obj.version_id or "",
        etag=obj.etag,
        size_bytes=obj.size_bytes,
        content_type=None,
        last_modified=obj.last_modified,
        metadata_read=False,
    )
    done: Future[ObjectInfo | None] = Future()
    done.set_result(info)
    return done


def _finish_batch(
    engine: Engine, settings: Settings, publish: Publish, heads: list[Future[ObjectInfo | None]]
) -> int:
    """Register what the HEADs found (those gone meanwhile are skipped), then publish."""
    infos = [(info, None) for future in heads if (info := future.result()) is not None]
    if not infos:
        return 0
    with Session(engine) as session, session.begin():
        result = _register(session, infos, settings)
    publish_after_commit(publish, result.queued)
    return result.inserted


def publish_after_commit(publish: Publish, job_ids: Sequence[int]) -> None:
    """Hand committed job ids to ``publish``; a failure is logged, not raised, because the
    jobs are safe in the database and the sweeper publishes queued jobs again."""
    if not job_ids:
        return
    try:
        publish(job_ids)
    except Exception:
        log.warning(
            "could not publish %d new job(s) %s; the sweeper will publish them later",
            len(job_ids),
            list(job_ids)[:20],
            exc_info=True,
        )
