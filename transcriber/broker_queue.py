"""What a Redis broker holds for one Celery queue, read with redis-py (no Celery here).

The sweeper compares it with the jobs the database says are queued, to tell a queue that is
long from one that was lost (a Redis restarted without persistence, a failover to a fresh
replica, a flush). It reads the layout of kombu's Redis transport with the options
``workers/app.py`` leaves at their defaults (no ``global_keyprefix``, kombu's own key names):

- a queue is a list under its name, plus one list per priority step
  (``<queue>\\x06\\x16<step>``); publishers LPUSH, workers BRPOP;
- a message a worker has taken and not yet acknowledged (acks late: until its task ended)
  is a field of the ``unacked`` hash, ``[message, exchange, routing key]``, and the time it
  was taken its score in the ``unacked_index`` sorted set;
- ``INFO server`` gives the server's ``run_id`` (new at every start) and uptime.

A message is Celery's protocol 2 in JSON: a base64 ``body`` of ``[args, kwargs, embed]``,
whose first argument is the job id (``workers.tasks.publish``).

Every read is bounded by a socket timeout; a broker that does not answer reads as None, and
the sweeper falls back to its rule by age.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from transcriber.config import Settings

log = logging.getLogger(__name__)

# kombu's Redis transport: its default priority steps, the separator of a step's list name,
# and the keys of its acknowledgement emulation.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
# Messages read per LRANGE when the job ids a queue holds are wanted: a bounded reply (about
# 1 MB) however long the queue.
READ_CHUNK = 1000
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Reading:
    """One look at the broker's side of the queue."""

    messages: int
    """Messages waiting in the queue (all its priority lists)."""
    reserved: int
    """Messages of the queue taken by a worker and not yet acknowledged, taken less than
    ``stale_after_s`` ago."""
    stale: int
    """Messages of the queue taken longer ago: a task running long, or a worker host that
    died holding them (Redis gives them back only after the visibility timeout)."""
    run_id: str
    uptime_s: int
    restarted: bool
    """The server's ``run_id`` differs from the one this reader saw last: it restarted (or
    another server took over) since, and whatever it held then may be gone."""

    @property
    def held(self) -> int:
        """The messages that stand for a job still to run: waiting or freshly reserved."""
        return self.messages + self.reserved


@dataclass(frozen=True)
class _Reservation:
    message: Any
    taken_at: float


class RedisQueue:
    """Reads queue ``queue`` of the Redis broker at ``url``.

    Keeps one connection pool across reads, and the ``run_id`` it saw last (to tell that the
    server restarted between two reads). ``stale_after_s``: how long a worker may hold a
    message reserved before it no longer counts as held.
    """

    def __init__(
        self, url: str, queue: str, *, stale_after_s: float, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.queue = queue
        self.stale_after_s = stale_after_s
        self.last_error: str | None = None
        steps = PRIORITY_STEPS[1:]  # step 0 is the queue's own list
        self._lists = [queue] + [f"{queue}{PRIORITY_SEPARATOR}{step}" for step in steps]
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._run_id: str | None = None

    def read(self) -> Reading | None:
        """Counts of the queue's messages, waiting and reserved, and the server's identity;
        None when the broker cannot be read (the reason in :attr:`last_error`)."""
        try:
            # One MULTI/EXEC: the lists and the reservations as of one instant.
            with self._client.pipeline(transaction=True) as pipe:
                for name in self._lists:
                    pipe.llen(name)
                pipe.hgetall(UNACKED)
                pipe.zrange(UNACKED_INDEX, 0, -1, withscores=True)
                *lengths, unacked, index = pipe.execute()
            server = self._client.info("server")
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        fresh, stale = 0, 0
        for reservation in self._reservations(unacked, index):
            if reservation.taken_at >= time.time() - self.stale_after_s:
                fresh += 1
            else:
                stale += 1
        run_id = str(server.get("run_id", ""))
        restarted = self._run_id is not None and run_id != self._run_id
        self._run_id = run_id
        self.last_error = None
        return Reading(
            messages=sum(int(n) for n in lengths),
            reserved=fresh,
            stale=stale,
            run_id=run_id,
            uptime_s=int(server.get("uptime_in_seconds", 0)),
            restarted=restarted,
        )

    def job_ids(self) -> set[int] | None:
        """The job ids of the messages the queue holds (waiting, or freshly reserved); None
        when the broker cannot be read.

        Read in chunks while workers and publishers go on, so a message may be seen twice or
        missed; a job missed only counts as lost, and is published again: harmless.
        """
        found: set[int] = set()
        try:
            for name in self._lists:
                for message in self._list(name):
                    _add(found, message)
            # After the lists: a message taken meanwhile has moved to the reservations.
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(UNACKED)
                pipe.zrange(UNACKED_INDEX, 0, -1, withscores=True)
                unacked, index = pipe.execute()
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        for reservation in self._reservations(unacked, index):
            if reservation.taken_at >= time.time() - self.stale_after_s:
                _add(found, reservation.message)
        return found

    def close(self) -> None:
        self._client.close()

    def _list(self, name: str) -> Iterator[Any]:
        start = 0
        while True:
            chunk = self._client.lrange(name, start, start + READ_CHUNK - 1)
            for raw in chunk:
                yield _loads(raw)
            if len(chunk) < READ_CHUNK:
                return
            start += READ_CHUNK

    def _reservations(
        self, unacked: dict[bytes, bytes], index: list[tuple[bytes, float]]
    ) -> Iterator[_Reservation]:
        """The reservations of this queue's messages (the hash holds every queue's)."""
        taken = dict(index)
        for tag, raw in unacked.items():
            entry = _loads(raw)
            # [message, exchange, routing key]: Celery routes to the queue by its name.
            if not isinstance(entry, list) or len(entry) != 3 or self.queue not in entry[1:]:
                continue
            # No score (written between the two commands of kombu's pipeline): just taken.
            yield _Reservation(entry[0], taken.get(tag, time.time()))

    def _failed(self, exc: redis.RedisError) -> None:
        # redis-py's messages name the host and port, never the password.
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("cannot read the broker's queue %r: %s", self.queue, self.last_error)


def redis_queue(settings: Settings) -> RedisQueue | None:
    """A reader of the settings' queue on their broker; None when the broker is not Redis
    (another transport keeps its messages elsewhere)."""
    if urlsplit(settings.broker_url).scheme not in ("redis", "rediss"):
        return None
    return RedisQueue(
        settings.broker_url, settings.queue, stale_after_s=settings.requeue_after_seconds
    )


def job_id_of(message: Any) -> int | None:
    """The job id a task message carries, or None for anything else (a message of another
    task, another serializer, or no message at all)."""
    if not isinstance(message, dict) or message.get("content-type") != "application/json":
        return None
    try:
        body: Any = message["body"]
        properties = message.get("properties") or {}
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        # Protocol 2: [args, kwargs, embed]; protocol 1: {"args": [...], ...}.
        args = decoded[0] if isinstance(decoded, list) else decoded["args"]
        return int(args[0])
    except (KeyError, IndexError, TypeError, ValueError):  # binascii.Error is a ValueError
        return None


def _add(found: set[int], message: Any) -> None:
    job_id = job_id_of(message)
    if job_id is not None:
        found.add(job_id)


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
