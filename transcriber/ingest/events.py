"""S3 event notifications, as SQS delivers them, read into :class:`ObjectEvent` records.

Nothing here trusts the message: anything that is not an S3 event notification raises
:class:`~transcriber.errors.BadEvent`, which the watcher logs before deleting the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from transcriber.errors import BadEvent
from transcriber.placement import parse_time
from transcriber.storage import plain_version_id, unquote_etag


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
        version_id=plain_version_id(version_id),
        etag=unquote_etag(etag),
        size=size,
        sequencer=sequencer if isinstance(sequencer, str) else None,
        event_time=_event_time(record.get("eventTime")),
    )


def _event_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    return parse_time(value)
