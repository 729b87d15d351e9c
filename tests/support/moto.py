"""S3 and SQS for tests: a real moto server on loopback, with bucket notifications wired.

A pytest plugin, registered by ``tests/conftest.py``: a test asks for the fixtures by name.
``moto_server`` runs one server for the whole session, with fake AWS credentials in the
environment so that boto3's normal chain finds them (and never a real account).
``moto_bucket`` gives each test a bucket and queue of its own, with the bucket's
ObjectCreated notifications going to the queue, and returns the :class:`Settings` that name
them. ``versioned_bucket`` is the same with versioning enabled.
"""

from __future__ import annotations

import http.client
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from moto.server import ThreadedMotoServer

from transcriber.config import Settings
from transcriber.storage import create_notified_bucket, s3_client

# The environment boto3 reads in tests: fake keys, a region, and no files or instance
# metadata service that could lend it a real identity (or make it reach the network).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int) -> ThreadedMotoServer:
    """A moto server on ``127.0.0.1:port``, started. All servers of a process share state."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto server serving S3 and SQS for the whole session."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        server = start_server(free_port())
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def make_bucket(endpoint: str, *, name: str | None = None) -> Settings:
    """A new bucket and queue on ``endpoint``, the bucket's ObjectCreated notifications going
    to the queue; returns the settings that name them."""
    settings = Settings(
        s3_endpoint_url=endpoint, s3_bucket=name or f"audio-{uuid.uuid4().hex[:12]}"
    )
    return settings.model_copy(update={"sqs_queue_url": create_notified_bucket(settings)})


def enable_versioning(settings: Settings) -> None:
    """Turn versioning on for the settings' bucket."""
    s3_client(settings).put_bucket_versioning(
        Bucket=settings.s3_bucket, VersioningConfiguration={"Status": "Enabled"}
    )


@pytest.fixture
def moto_bucket(moto_server: str) -> Settings:
    """Settings naming a fresh bucket (no versioning) and its notification queue."""
    return make_bucket(moto_server)


@pytest.fixture
def versioned_bucket(moto_bucket: Settings) -> Settings:
    """Settings naming a fresh bucket with versioning enabled, and its notification queue."""
    enable_versioning(moto_bucket)
    return moto_bucket


@contextmanager
def faulty_proxy(upstream: str, fail: frozenset[str] = frozenset({"HEAD"})) -> Iterator[str]:
    """An endpoint on loopback that forwards requests to ``upstream`` but answers those with
    a method in ``fail`` with ``503 Slow Down``: S3 failing while SQS works."""
    target = urlsplit(upstream)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if self.command in fail:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
            try:
                connection.request(self.command, self.path, body, dict(self.headers))
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
