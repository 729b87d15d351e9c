"""S3 and SQS through boto3: lazily built clients, object facts, exact-version downloads.

Clients are built on first use, once per process and endpoint (never at import time, and never
shared across a fork: a Celery worker forks its children after start-up). Credentials come
only from boto3's own chain (environment, profile, instance role); they never pass through
our settings, and nothing here logs them.

Every botocore failure leaves this module as one of the project's errors, so callers decide
on retries by class alone:

- the object version is gone (deleted, overwritten in a bucket without versioning, a delete
  marker) → :class:`~transcriber.errors.Superseded` (permanent);
- throttling, a 5xx answer, a refused or timed-out connection →
  :class:`~transcriber.errors.StorageUnavailable` (transient);
- access denied → :class:`StorageAccessDenied` (permanent, see its docstring for why);
- any other refusal (a 4xx S3 will answer the same way next time) → :class:`StorageError`.
"""

from __future__ import annotations

import base64
import email.errors
import email.header
import email.utils
import logging
import mimetypes
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3.session
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from transcriber.audio import check_size
from transcriber.clock import as_utc
from transcriber.config import Settings
from transcriber.errors import (
    AudioTooLarge,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
    Superseded,
    TranscriberError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef, HeadObjectOutputTypeDef
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
_CHUNK = 1 << 20

# Long polls wait up to 20 s for SQS, and a slow S3 GET may pause between chunks: the read
# timeout must outlast both. Connecting should never take long. Retries use botocore's
# "standard" mode (exponential backoff with jitter, throttling-aware); the number of
# attempts is left to boto3's chain (AWS_MAX_ATTEMPTS, ~/.aws/config), default 3.
_CONNECT_TIMEOUT_S = 10
_READ_TIMEOUT_S = 60

# Error codes that mean "that object version no longer exists". S3 answers HEAD with a bare
# status code; 405 is a version that is a delete marker; 412 is an If-Match on an ETag that
# is no longer the object's (overwritten in a bucket without versioning).
_GONE = frozenset(
    {"NoSuchKey", "NoSuchVersion", "NotFound", "404", "MethodNotAllowed", "405"}
    | {"PreconditionFailed", "412"}
)
_UNAVAILABLE = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "OperationAborted",
        # Credentials that expired refresh themselves (instance roles) and a skewed clock
        # gets fixed: neither is the object's fault, so they are worth another try.
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "RequestTimeTooSkewed",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSecurity",
    }
)
# boto3 raises these before any request leaves: no credentials anywhere in the chain.
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError)
_SQS_HOST = re.compile(r"^sqs[.-]([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class ObjectInfo:
    """What S3 says about one object version (from HEAD)."""

    bucket: str
    key: str
    version_id: str
    """The S3 version id; ``''`` in a bucket without versioning (S3's ``"null"`` too)."""
    etag: str
    """Without the quotes S3 puts around it."""
    size_bytes: int
    content_type: str | None
    last_modified: datetime
    """Timezone-aware, UTC."""
    metadata: dict[str, str] = field(default_factory=dict)
    """S3 user metadata (``x-amz-meta-*``), keys lower-case, RFC 2047 values decoded."""
    metadata_read: bool = True
    """False for an object known from a listing, which carries neither user metadata nor
    content type (both then empty): the worker reads them when it downloads the object."""


@dataclass(frozen=True)
class ListedObject:
    """One entry of a bucket listing (the current version of a key)."""

    key: str
    etag: str
    size_bytes: int
    last_modified: datetime
    version_id: str | None = None
    """From a listing of versions, the version's id (``''`` in a bucket without versioning);
    None from a plain listing, which does not say."""


@dataclass(frozen=True)
class Downloaded:
    """A downloaded object version: the file, and what S3 said of it on the way."""

    path: Path
    metadata: dict[str, str]
    """As :attr:`ObjectInfo.metadata`."""
    content_type: str | None


class ObjectVersion(Protocol):
    """Anything that names one object version: :class:`ObjectInfo`, a ``schema.AudioObject``."""

    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def version_id(self) -> str: ...
    @property
    def etag(self) -> str: ...


# --- Clients ------------------------------------------------------------------------------

_lock = threading.Lock()
_clients: dict[tuple[str, int, str, str], Any] = {}


def s3_client(settings: Settings) -> S3Client:
    """The S3 client of this process for ``settings.s3_endpoint_url`` (empty: AWS)."""
    endpoint = settings.s3_endpoint_url or None
    client: S3Client = _client("s3", endpoint, None)
    return client


def sqs_client(settings: Settings) -> SQSClient:
    """The SQS client of this process.

    It talks to ``settings.s3_endpoint_url`` when that is set (moto and other emulators serve
    both APIs on one endpoint); on AWS, to the region named in ``settings.sqs_queue_url``, so
    that a queue in another region than the default one still works.
    """
    endpoint = settings.s3_endpoint_url or None
    region = None if endpoint else _queue_region(settings.sqs_queue_url)
    client: SQSClient = _client("sqs", endpoint, region)
    return client


def _queue_region(queue_url: str) -> str | None:
    host = re.sub(r"^https?://", "", queue_url).split("/", 1)[0].lower()
    match = _SQS_HOST.match(host)
    return match.group(1) if match else None


def _client(service: str, endpoint: str | None, region: str | None) -> Any:
    key = (service, os.getpid(), endpoint or "", region or "")
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(service, endpoint, region)
        return client


def _new_client(service: str, endpoint: str | None, region: str | None) -> Any:
    # A session of its own: boto3's default session is not safe to build clients from in
    # several threads at once.
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    session = boto3.session.Session(botocore_session=core)
    region = region or session.region_name or DEFAULT_REGION
    config = Config(
        connect_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=_READ_TIMEOUT_S,
        retries={"mode": "standard"},
        # S3-compatible stores on a plain host name (MinIO, moto) rarely have the wildcard
        # DNS that virtual-hosted bucket addressing needs.
        s3={"addressing_style": "path"} if endpoint else None,
    )
    log.debug("new %s client (region %s, endpoint %s)", service, region, endpoint or "AWS")
    return session.client(service, region_name=region, endpoint_url=endpoint, config=config)  # type: ignore[call-overload]


def _parse_timestamp(value: Any) -> datetime:
    """A timestamp in a response, as botocore's own parser reads it, only faster for the two
    forms S3 uses: ISO 8601 in listings (``2026-03-14T10:15:02.000Z``) and RFC 1123 in
    headers (``Sat, 14 Mar 2026 10:15:02 GMT``). botocore hands every timestamp to dateutil,
    which took three quarters of the time of parsing a listing page of 1,000 objects."""
    if isinstance(value, str):
        parsed: datetime | None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                parsed = None
        # Without a zone (or for epoch numbers) botocore's rules apply, whatever they are.
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    fallback: datetime = botocore.utils.parse_timestamp(value)
    return fallback


# --- Objects ------------------------------------------------------------------------------


def head(
    client: S3Client, bucket: str, key: str, version_id: str | None = None
) -> ObjectInfo | None:
    """The facts of ``key`` (that version, or the current one); None when it no longer exists."""
    try:
        if version_id:
            response = client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
        else:
            response = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _code(exc) in _GONE:
            return None
        raise storage_error(exc, f"reading the facts of s3://{bucket}/{key}") from exc
    except BotoCoreError as exc:
        raise storage_error(exc, f"reading the facts of s3://{bucket}/{key}") from exc
    return _object_info(bucket, key, response)


def iter_objects(client: S3Client, bucket: str, prefix: str = "") -> Iterator[ListedObject]:
    """Every object under ``prefix``, page by page (``list_objects_v2``), in key order."""
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield ListedObject(
                    key=entry["Key"],
                    etag=unquote_etag(entry.get("ETag", "")),
                    size_bytes=entry.get("Size", 0),
                    last_modified=as_utc(entry["LastModified"]),
                )
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, f"listing s3://{bucket}/{prefix}") from exc


def iter_current_versions(
    client: S3Client, bucket: str, prefix: str = ""
) -> Iterator[ListedObject]:
    """The current version of every object under ``prefix``, with its version id, page by
    page (``list_object_versions``, which needs ``s3:ListBucketVersions``), in key order. A
    key whose current version is a delete marker is left out, as are older versions."""
    paginator = client.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Versions", []):
                if entry.get("IsLatest"):
                    yield ListedObject(
                        key=entry["Key"],
                        etag=unquote_etag(entry.get("ETag", "")),
                        size_bytes=entry.get("Size", 0),
                        last_modified=as_utc(entry["LastModified"]),
                        version_id=plain_version_id(entry.get("VersionId")),
                    )
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, f"listing the versions of s3://{bucket}/{prefix}") from exc


def download(client: S3Client, obj: ObjectVersion, directory: Path, max_bytes: int) -> Downloaded:
    """Download exactly the version ``obj`` names into a new file in ``directory``.

    The version is pinned by ``VersionId`` where the bucket has versions, else by
    ``If-Match`` on the recorded ETag; either way a newer upload under the same key is never
    transcribed in the old one's place (:class:`Superseded` instead). The file's name comes
    from :mod:`tempfile`, never from the key, which may hold ``../``, spaces or anything
    else. The size S3 announces is checked against ``max_bytes`` before a byte is written.
    On any error no file is left behind. The user metadata and content type come back with
    the file: an object registered from a listing learns them here.
    """
    where = f"s3://{obj.bucket}/{obj.key}"
    try:
        if obj.version_id:
            response = client.get_object(Bucket=obj.bucket, Key=obj.key, VersionId=obj.version_id)
        else:
            response = client.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=f'"{obj.etag}"')
    except ClientError as exc:
        if _code(exc) in _GONE:
            raise Superseded(_superseded_message(obj)) from exc
        raise storage_error(exc, f"downloading {where}") from exc
    except BotoCoreError as exc:
        raise storage_error(exc, f"downloading {where}") from exc
    body = response["Body"]
    try:
        length = response.get("ContentLength")
        if length is not None:  # a chunked answer has none; then the stream is counted
            check_size(length, max_bytes)
        path = _stream_to_file(response, directory, max_bytes, where)
    finally:
        body.close()
    return Downloaded(path, _user_metadata(response), response.get("ContentType"))


def _stream_to_file(
    response: GetObjectOutputTypeDef, directory: Path, max_bytes: int, where: str
) -> Path:
    fd, name = tempfile.mkstemp(prefix="s3-", suffix=".audio", dir=directory)
    path = Path(name)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in response["Body"].iter_chunks(_CHUNK):
                written += len(chunk)
                # S3 said how long the body is, but a server may send more than it said.
                if written > max_bytes:
                    raise AudioTooLarge(
                        f"the download grew past the limit of {max_bytes} bytes "
                        "(TRANSCRIBER_MAX_AUDIO_BYTES)"
                    )
                out.write(chunk)
    except (ClientError, BotoCoreError) as exc:
        path.unlink(missing_ok=True)
        raise storage_error(exc, f"downloading {where}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def put(
    client: S3Client,
    bucket: str,
    key: str,
    path: Path,
    metadata: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> ObjectInfo:
    """Upload ``path`` as ``key`` with user ``metadata``; returns the new version's facts.

    Values outside ASCII are sent RFC 2047-encoded, as S3 itself stores them, since HTTP
    headers cannot carry them raw (:func:`head` decodes them again). One PUT, so objects are
    limited to S3's 5 GB for single uploads, far above any sensible ``MAX_AUDIO_BYTES``.
    """
    headers = {
        name.lower(): _encode_header_value(value) for name, value in (metadata or {}).items()
    }
    content_type = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        with path.open("rb") as body:
            response = client.put_object(
                Bucket=bucket, Key=key, Body=body, Metadata=headers, ContentType=content_type
            )
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, f"uploading to s3://{bucket}/{key}") from exc
    info = head(client, bucket, key, plain_version_id(response.get("VersionId")) or None)
    if info is None:
        raise Superseded(f"s3://{bucket}/{key} was deleted right after it was uploaded")
    return info


# --- Errors -------------------------------------------------------------------------------


def storage_error(exc: Exception, what: str) -> TranscriberError:
    """The project's error for a botocore failure while ``what`` (S3 and SQS alike)."""
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = _status(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        if code == "InvalidObjectState":
            return StorageError(f"cannot read {what}: archived, it must be restored first")
        if code in _DENIED or status == 403:
            return StorageAccessDenied(f"access denied {what}: {message}")
        if code in _UNAVAILABLE or status == 429 or status >= 500:
            return StorageUnavailable(f"storage unavailable {what}: {code} {message}")
        return StorageError(f"storage refused {what}: {code} {message}")
    if isinstance(exc, _NO_CREDENTIALS):
        return StorageAccessDenied(f"no AWS credentials found {what} ({type(exc).__name__})")
    if isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError):
        return StorageUnavailable(f"storage unreachable {what}: {exc}")
    # Anything else botocore raises (a bad parameter, a parse failure) will not go away
    # by asking again.
    return StorageError(f"storage error {what}: {exc}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _superseded_message(obj: ObjectVersion) -> str:
    which = f"version {obj.version_id}" if obj.version_id else f"ETag {obj.etag}"
    return (
        f"s3://{obj.bucket}/{obj.key} ({which}) was overwritten or deleted before it could "
        "be transcribed"
    )


# --- Small conversions --------------------------------------------------------------------


def _object_info(bucket: str, key: str, response: HeadObjectOutputTypeDef) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        version_id=plain_version_id(response.get("VersionId")),
        etag=unquote_etag(response.get("ETag", "")),
        size_bytes=int(response.get("ContentLength", 0)),
        content_type=response.get("ContentType"),
        last_modified=as_utc(response["LastModified"]),
        metadata=_user_metadata(response),
    )


def _user_metadata(response: HeadObjectOutputTypeDef | GetObjectOutputTypeDef) -> dict[str, str]:
    return {
        name.lower(): decode_header_value(value)
        for name, value in response.get("Metadata", {}).items()
    }


def plain_version_id(value: str | None) -> str:
    """A version id as recorded: ``""`` for none."""
    # S3 reports objects written before versioning was enabled (or while it is suspended)
    # as version "null", which means the same as no version at all.
    return "" if not value or value == "null" else value


def unquote_etag(etag: str) -> str:
    """An ETag as recorded: without the quotes S3 puts around it."""
    return etag.strip().strip('"')


def _encode_header_value(value: str) -> str:
    if value.isascii() and value.isprintable():
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8", "replace")).decode() + "?="


def decode_header_value(value: str) -> str:
    """A metadata value as text: S3 hands back non-ASCII values RFC 2047-encoded
    (``=?UTF-8?B?…?=``). Bytes that are not valid in their charset become U+FFFD."""
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
    except (ValueError, email.errors.HeaderParseError):
        return value
    text: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            text.append(chunk)
            continue
        try:
            text.append(chunk.decode(charset or "utf-8", errors="replace"))
        except LookupError:  # a charset Python does not know
            text.append(chunk.decode("utf-8", errors="replace"))
    return "".join(text)


def create_notified_bucket(settings: Settings, *, versioning: bool = False) -> str:
    """Create ``S3_BUCKET`` and an SQS queue of the same name that receives the bucket's
    ``s3:ObjectCreated:*`` notifications; return the queue's URL. For the embedded stack and
    tests (on AWS, set this up once with the CLI or infrastructure code: see the README)."""
    s3 = s3_client(settings)
    sqs = sqs_client(settings)
    s3.create_bucket(Bucket=settings.s3_bucket)
    if versioning:
        s3.put_bucket_versioning(
            Bucket=settings.s3_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    queue_url = sqs.create_queue(QueueName=settings.s3_bucket)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=settings.s3_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return queue_url
