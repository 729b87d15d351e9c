"""Where and when a recording was made: an object's facility, sensor and recording time.

The rules that read them from the object's key (``KEY_PATTERN``), its user metadata and its
LastModified time, and the ``audio_objects`` values they give. Registration
(:mod:`transcriber.ingest.registration`) places each new object version; the job path
(:mod:`transcriber.job_steps`) places again an object a scan registered, once its download
has brought the user metadata a listing lacks. Both use these rules, so they live below both.

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

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from transcriber.clock import as_utc
from transcriber.codes import CODE_MAX, CodeIds
from transcriber.config import Settings
from transcriber.schema import AudioObject, RecordedAtSource
from transcriber.storage import Downloaded, ObjectInfo

_META_ITEMS_MAX = 32
_META_NAME_MAX = 128
_META_VALUE_MAX = 1024
_TIME_TEXT_MAX = 64
# Recording times outside these are typos or hostile, and are ignored like any invalid one.
# The upper bound also matters: at datetime.max (9999-12-31) adding a segment's offset to the
# recording time overflows, and a job with perfectly good audio would fail as "internal".
_TIME_MIN = datetime(1900, 1, 1, tzinfo=UTC)
_TIME_MAX = datetime(3000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Placement:
    """Where and when a recording was made, and where its time came from."""

    facility_code: str | None
    sensor_code: str | None
    recorded_at: datetime
    source: RecordedAtSource


def wanted(key: str, settings: Settings) -> bool:
    """Whether ``key`` is audio to transcribe: under ``S3_PREFIX``, ending in one of
    ``S3_SUFFIXES`` (case-insensitive; empty: any), and not a folder marker."""
    # NUL cannot be stored in PostgreSQL text; S3 allows it in keys, we do not.
    if not key or key.endswith("/") or "\x00" in key or not key.startswith(settings.s3_prefix):
        return False
    suffixes = tuple(s.strip().lower() for s in settings.s3_suffixes.split(",") if s.strip())
    return not suffixes or key.lower().endswith(suffixes)


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
    return Placement(facility, sensor, as_utc(last_modified), "last_modified")


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
        parsed = as_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None
    return parsed if _TIME_MIN <= parsed < _TIME_MAX else None


def clean_code(value: str | None) -> str | None:
    """A facility or sensor code fit to store: printable characters only, trimmed, at most
    64 characters; None when nothing is left."""
    if value is None:
        return None
    return clean_text(value, CODE_MAX) or None


def clean_text(value: str, limit: int) -> str:
    """``value`` safe for any column or JSON document: valid UTF-8 (lone surrogates
    replaced), no control or other non-printable characters (PostgreSQL rejects NUL), trimmed
    and cut to ``limit`` characters."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return "".join(ch for ch in value if ch.isprintable()).strip()[:limit]


def clean_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    for name, value in list(metadata.items())[:_META_ITEMS_MAX]:
        clean_name = clean_text(str(name).lower(), _META_NAME_MAX)
        if clean_name:
            cleaned[clean_name] = clean_text(str(value), _META_VALUE_MAX)
    return cleaned


def object_values(
    info: ObjectInfo, sequencer: str | None, placement: Placement, codes: CodeIds
) -> dict[str, Any]:
    """The ``audio_objects`` values of an object version placed at ``placement``."""
    facility_id = codes.facility_id(placement.facility_code)
    sensor_id = codes.sensor_id(facility_id, placement.sensor_code)
    last_modified = as_utc(info.last_modified)
    document = {
        "facility": placement.facility_code,
        "sensor": placement.sensor_code,
        "last_modified": last_modified.isoformat(),
        # None until the object's metadata is read (see :func:`transcriber.ingest.scan.scan`).
        "s3_metadata": clean_metadata(info.metadata) if info.metadata_read else None,
    }
    content_type = clean_text(info.content_type, 255) if info.content_type else None
    return {
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
    codes = CodeIds(session, settings.auto_register_sensors)
    values = object_values(info, audio.sequencer, placement, codes)
    placed = ("facility_id", "sensor_id", "recorded_at", "recorded_at_source", "content_type")
    session.execute(
        update(AudioObject)
        .where(AudioObject.id == audio.id)
        .values({AudioObject.meta: values["metadata"]} | {name: values[name] for name in placed})
    )
    return True
