"""Task messages on a Redis queue, put there and taken the way the service's publisher and its
workers do (Celery's protocol 2 in JSON, through kombu's Redis transport), for the tests of
the sweeper's comparison of the broker with the database.

:class:`TaskQueue` publishes job ids, takes messages as a worker does (reserved, not yet
acknowledged) and reads the queue's raw state with plain Redis commands, so that the tests
check :mod:`transcriber.broker_queue` against Redis itself rather than against itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery

TASK = "workers.tasks.transcribe"


class TaskQueue:
    """Queue ``queue`` on the Redis at ``url``."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.app = Celery("tests", broker=url, set_as_current=False)
        self.app.conf.update(task_serializer="json", accept_content=["json"])
        self.redis = redis.Redis.from_url(url)

    def publish(self, job_ids: Sequence[int], *, priority: int | None = None) -> None:
        """One transcribe task per job id, as ``workers.tasks.publish`` sends them."""
        with self.app.producer_or_acquire() as producer:
            for job_id in job_ids:
                args = (int(job_id),)
                self.app.send_task(
                    TASK, args=args, queue=self.queue, producer=producer, priority=priority
                )

    @contextmanager
    def taken(self, count: int = 1) -> Iterator[list[Any]]:
        """Take ``count`` messages as a worker does (acks late: reserved in kombu's
        ``unacked`` hash until acknowledged); those not acknowledged in the block go back to
        the queue when it ends, as at a worker's warm shutdown."""
        with self.app.connection_for_read() as connection:
            channel: Any = connection.default_channel
            messages = [channel.basic_get(self.queue, no_ack=False) for _ in range(count)]
            assert all(message is not None for message in messages), "the queue ran dry"
            yield messages

    def length(self) -> int:
        """LLEN of the queue's list (the tests publish without priorities)."""
        return int(self.redis.llen(self.queue))

    def reserved(self) -> int:
        """Messages of this queue in kombu's ``unacked`` hash."""
        entries = (json.loads(raw) for raw in self.redis.hvals("unacked"))
        return sum(1 for entry in entries if entry[2] == self.queue)

    def drop(self) -> None:
        """Delete the queue's messages: what a broker that lost them holds."""
        self.redis.delete(self.queue, *(f"{self.queue}\x06\x16{step}" for step in (3, 6, 9)))

    def close(self) -> None:
        self.drop()
        # And what declaring the queue left (the Redis may be the machine's, shared).
        self.redis.delete(f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}")
        self.app.close()
        self.redis.close()
