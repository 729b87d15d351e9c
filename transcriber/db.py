"""Engine factories: one shared engine per process and URL, or a private one.

Engines are built on first use, once per process and URL (never at import time), because a
Celery worker forks its children after start-up and a connection pool must not cross a fork.
Code that owns its own engine (tests, benchmarks, one-off scripts) calls :func:`make_engine`
and disposes it itself.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from transcriber.config import get_settings

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for ``url``, set up the way this project needs it.

    SQLite gets foreign keys enforced, WAL journaling (readers never block the writer) and a
    busy timeout, and the directory of its file is created. PostgreSQL connections run in UTC
    so that timestamps print the same for every user of the database.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("connect_args", {}).setdefault("options", "-c timezone=UTC")
        return create_engine(url, **kwargs)
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The shared engine for ``url`` (default: the configured database) in this process."""
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url)
        return engine


def read_only_engine(url: str) -> Engine:
    """An engine whose connections cannot write: SQLite opened read-only, PostgreSQL
    sessions with ``default_transaction_read_only``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "").resolve()
        return create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", connect_args={"uri": True})
    return make_engine(
        url, connect_args={"options": "-c timezone=UTC -c default_transaction_read_only=on"}
    )
