"""Reconciliation: list the bucket and register what events missed (``transcriber scan``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from transcriber.bulk_sql import custom_plans
from transcriber.config import Settings
from transcriber.errors import StorageAccessDenied
from transcriber.ingest.registration import register_batch
from transcriber.jobs import Publish, publish_after_commit
from transcriber.placement import wanted
from transcriber.schema import AudioObject
from transcriber.storage import (
    ListedObject,
    ObjectInfo,
    head,
    iter_current_versions,
    iter_objects,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_SCAN_BATCH = 500
_HEAD_THREADS = 8


@dataclass(frozen=True)
class ScanResult:
    """``listed``: objects in the listing; ``registered``: new object versions recorded;
    ``skipped``: the rest (keys not wanted, versions already known, objects gone before
    they could be read)."""

    listed: int = 0
    registered: int = 0
    skipped: int = 0


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
    worker downloads it and places it again
    (:func:`transcriber.placement.place_downloaded`). One request per object for the
    metadata would cap a scan at what S3 answers per second (a few hundred HEADs; 134 a
    second against the emulator on two cores, where a listing page brings 1,000 objects).
    Without ``s3:ListBucketVersions`` the scan lists objects and reads each one's facts
    with a HEAD instead, and says so in the log.
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
        custom_plans(session)
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
        result = register_batch(session, infos, settings)
    publish_after_commit(publish, result.queued)
    return result.inserted
