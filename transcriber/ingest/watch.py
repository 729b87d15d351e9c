"""The bucket watcher (``transcriber watch``): S3 event notifications from SQS → job rows.

One round (:meth:`Watcher.run_once`) receives up to ten messages, reads the facts of each
object they announce (HEAD: version id, user metadata; all of the round's at once),
registers them all in one transaction, and only then publishes the new job ids and deletes
the messages. A crash at any point loses nothing: before the commit SQS delivers the
messages again, after it the registration is idempotent and the sweeper publishes queued
jobs no worker started. A message whose object could not be read because S3 did not answer
stays in the queue, so SQS delivers it again; one that is not an S3 event at all is logged
and deleted.

:meth:`Watcher.run` repeats rounds until told to stop, backs off (1 s doubling to 60 s, with
jitter) while S3, SQS or the database are unreachable, and runs the sweeper between rounds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeAlias

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from transcriber.config import Settings
from transcriber.errors import BadEvent, StorageAccessDenied, StorageError, TransientError
from transcriber.ingest.events import ObjectEvent, parse_event_message
from transcriber.ingest.registration import register
from transcriber.jobs import Publish, publish_after_commit
from transcriber.placement import wanted
from transcriber.storage import (
    ObjectInfo,
    head,
    s3_client,
    sqs_client,
    storage_error,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

# What reading a message gives: the HEADs under way for its events, or why it is no event.
_Reads: TypeAlias = "list[tuple[ObjectEvent, Future[ObjectInfo | None]]] | BadEvent"

MAX_MESSAGES = 10  # SQS's own limit per receive
_HEAD_THREADS = MAX_MESSAGES  # one HEAD per message at once (a message rarely has more)
# Failures of a round that are about the world, not the code: logged without a traceback.
_EXPECTED = (TransientError, StorageError, OperationalError, InterfaceError)


class Watcher:
    """Turns the bucket's ObjectCreated notifications into queued jobs.

    ``publish`` gets the ids of new queued jobs after their commit; ``sweep``, when given,
    runs every ``SWEEP_INTERVAL_SECONDS`` (it republishes jobs the queue lost).
    ``wait_time_seconds`` is the SQS long-poll wait (at most 20); ``run`` stops within one
    such wait after ``stop`` is set.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        publish: Publish,
        sweep: Callable[[], object] | None = None,
        *,
        wait_time_seconds: int = 20,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        if not settings.sqs_queue_url:
            raise ValueError("TRANSCRIBER_SQS_QUEUE_URL is not set: the watcher needs a queue")
        self.settings = settings
        self.engine = engine
        self.publish = publish
        self.sweep = sweep
        self.wait_time_seconds = max(0, min(20, wait_time_seconds))
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._head_pool: ThreadPoolExecutor | None = None

    def run_once(self) -> int:
        """One receive, register, publish, delete round; returns the number of new jobs.

        Raises :class:`~transcriber.errors.TransientError` (after finishing the messages that
        could be handled) when S3 or SQS did not answer, and SQLAlchemy's errors when the
        database did not: then no message of the round is deleted.
        """
        sqs = sqs_client(self.settings)
        messages = self._receive(sqs)
        if not messages:
            return 0
        objects, handled, failure = self._collect(s3_client(self.settings), messages)
        job_ids = self._register(objects)
        publish_after_commit(self.publish, job_ids)
        self._delete(sqs, handled)
        if job_ids:
            log.info("registered %d new job(s) from %d message(s)", len(job_ids), len(handled))
        if failure is not None:
            raise failure
        return len(job_ids)

    def run(self, stop: threading.Event) -> None:
        """Run rounds until ``stop`` is set, surviving outages of S3, SQS and the database."""
        failures = 0
        next_sweep = time.monotonic()
        log.info("watching %s", self.settings.sqs_queue_url)
        while not stop.is_set():
            if self.sweep is not None and time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self.settings.sweep_interval_seconds
            try:
                self.run_once()
            except Exception as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "watch round failed (%d in a row), next try in %.1f s: %s",
                    failures,
                    delay,
                    exc,
                    exc_info=not isinstance(exc, _EXPECTED),
                )
                stop.wait(delay)
            else:
                if failures:
                    log.info("watch recovered after %d failed round(s)", failures)
                failures = 0
        log.info("watcher stopped")

    # --- One round ------------------------------------------------------------------------

    def _receive(self, sqs: SQSClient) -> list[MessageTypeDef]:
        try:
            response = sqs.receive_message(
                QueueUrl=self.settings.sqs_queue_url,
                MaxNumberOfMessages=MAX_MESSAGES,
                WaitTimeSeconds=self.wait_time_seconds,
            )
        except (ClientError, BotoCoreError) as exc:
            raise storage_error(exc, "receiving from the SQS queue") from exc
        return list(response.get("Messages", []))

    def _collect(
        self, s3: S3Client, messages: Sequence[MessageTypeDef]
    ) -> tuple[list[tuple[ObjectInfo, str | None]], list[MessageTypeDef], Exception | None]:
        """The objects the messages announce, the messages that are done with (to delete),
        and the first error that means some must stay in the queue."""
        # All the round's HEADs run at once, rather than one round trip after another; their
        # outcomes are then taken message by message, in order, as if read one at a time.
        reads = [self._start_reads(s3, message.get("Body", "")) for message in messages]
        objects: list[tuple[ObjectInfo, str | None]] = []
        handled: list[MessageTypeDef] = []
        for index, (message, read) in enumerate(zip(messages, reads, strict=True)):
            name = message.get("MessageId")
            try:
                objects.extend(self._finish_reads(read))
            except BadEvent as exc:
                log.warning("dropping message %s: %s", name, exc)
            except StorageAccessDenied as exc:
                # Most likely a policy being fixed: keep the message (SQS delivers it again,
                # or moves it to a dead-letter queue) and say so loudly.
                log.error("message %s kept: %s", name, exc)
                _cancel(reads[index + 1 :])
                return objects, handled, exc
            except StorageError as exc:
                log.error("dropping message %s: %s", name, exc)
            except Exception as exc:
                # S3 did not answer (or a bug): this message and the rest stay in the queue.
                # Reading on would only wait for the same timeouts again.
                log.warning(
                    "message %s kept for redelivery: %s",
                    name,
                    exc,
                    exc_info=not isinstance(exc, TransientError),
                )
                _cancel(reads[index + 1 :])
                return objects, handled, exc
            handled.append(message)
        return objects, handled, None

    def _start_reads(self, s3: S3Client, body: str) -> _Reads:
        """Start reading the current facts of each wanted object a message announces."""
        try:
            events = parse_event_message(body)
        except BadEvent as exc:
            return exc
        reads: list[tuple[ObjectEvent, Future[ObjectInfo | None]]] = []
        for event in events:
            if event.bucket != self.settings.s3_bucket:
                log.warning(
                    "ignoring an event for bucket %r (watching %r)",
                    event.bucket,
                    self.settings.s3_bucket,
                )
                continue
            if not wanted(event.key, self.settings):
                log.debug("ignoring %r: not under the prefix or not an audio suffix", event.key)
                continue
            future = self._heads().submit(
                head, s3, event.bucket, event.key, event.version_id or None
            )
            reads.append((event, future))
        return reads

    @staticmethod
    def _finish_reads(reads: _Reads) -> list[tuple[ObjectInfo, str | None]]:
        """The facts read, each with the event's sequencer when they are of the very version
        the event was about; raises what the message's parsing or reading raised."""
        if isinstance(reads, BadEvent):
            raise reads
        found: list[tuple[ObjectInfo, str | None]] = []
        for event, future in reads:
            info = future.result()
            if info is None:
                log.info("s3://%s/%s is gone already; nothing to register", event.bucket, event.key)
                continue
            same_version = info.version_id == event.version_id and (
                not event.etag or info.etag == event.etag
            )
            found.append((info, event.sequencer if same_version else None))
        return found

    def _heads(self) -> ThreadPoolExecutor:
        # Built on first use and kept: a round is short, and new threads each round would
        # cost more than they save. Its idle threads end with the process.
        if self._head_pool is None:
            self._head_pool = ThreadPoolExecutor(
                max_workers=_HEAD_THREADS, thread_name_prefix="watch-head"
            )
        return self._head_pool

    def _register(self, objects: Sequence[tuple[ObjectInfo, str | None]]) -> list[int]:
        if not objects:
            return []
        with Session(self.engine) as session, session.begin():
            return register(session, objects, self.settings)

    def _delete(self, sqs: SQSClient, messages: Sequence[MessageTypeDef]) -> None:
        handles = [message["ReceiptHandle"] for message in messages if "ReceiptHandle" in message]
        if not handles:
            return
        try:
            response = sqs.delete_message_batch(
                QueueUrl=self.settings.sqs_queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": handle}
                    for index, handle in enumerate(handles)
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            # Harmless beyond the retry: the messages come back and register nothing new.
            raise storage_error(exc, "deleting handled SQS messages") from exc
        for failed in response.get("Failed", []):
            log.warning("could not delete an SQS message: %s", failed.get("Message"))

    # --- Between rounds -------------------------------------------------------------------

    def _sweep(self) -> None:
        assert self.sweep is not None
        try:
            swept = self.sweep()
        except Exception as exc:
            log.warning("sweep failed: %s", exc, exc_info=not isinstance(exc, TransientError))
            return
        count = swept if isinstance(swept, int) else len(swept) if isinstance(swept, Sized) else 0
        if count:
            log.info("sweeper published %d job(s) again", count)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(failures - 1, 30))
        # "Equal jitter": half the delay fixed, half random, so that several watchers that
        # lost the same endpoint do not all come back at the same instant.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not cryptographic


def _cancel(reads: Sequence[_Reads]) -> None:
    """Drop the HEADs not yet begun of messages that stay in the queue."""
    for read in reads:
        if not isinstance(read, BadEvent):
            for _, future in read:
                future.cancel()
