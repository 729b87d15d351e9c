"""A stand-in for S3's ListObjectVersions over a large bucket, for the scan's benchmark.

moto works out a listing page by walking every key of the bucket (and, for versions, every
version): a page costs time in proportion to the bucket, so listing the whole bucket costs
its square. Measured on two cores: ``list_objects_v2`` gave 2,026 objects/s over 5,000 keys
and 1,021/s over 20,000; ``list_object_versions`` 687/s and 161/s. S3 itself answers each
page of 1,000 in tens of milliseconds, whatever the bucket holds. Against moto, a scan of
100,000 objects would measure moto.

This server answers ``GET /<bucket>?versions`` (prefix, key marker, 1,000 versions a page)
with the XML S3 writes, from a sorted list of keys made once, each page found by bisection.
boto3 parses it as it would S3's answer, so the client's share of a listing is measured
with the rest of the scan. It runs in a process of its own, as S3 would be another machine.
Everything else answers 501.
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape

PAGE = 1_000
LAST_MODIFIED = "2026-03-14T12:00:00.000Z"


def _page(bucket: str, keys: list[str], bodies: list[bytes], query: dict[str, str]) -> bytes:
    prefix = query.get("prefix", "")
    marker = query.get("key-marker", "")
    encode = query.get("encoding-type") == "url"

    def text(value: str) -> str:
        return escape(quote(value, safe="/") if encode else value)

    start = bisect.bisect_right(keys, marker) if marker else bisect.bisect_left(keys, prefix)
    entries: list[str] = []
    index = start
    while index < len(keys) and len(entries) < PAGE and keys[index].startswith(prefix):
        etag = hashlib.md5(bodies[index]).hexdigest()
        entries.append(
            f"<Version><Key>{text(keys[index])}</Key><VersionId>null</VersionId>"
            f"<IsLatest>true</IsLatest><LastModified>{LAST_MODIFIED}</LastModified>"
            f"<ETag>&quot;{etag}&quot;</ETag><Size>{len(bodies[index])}</Size>"
            "<StorageClass>STANDARD</StorageClass></Version>"
        )
        index += 1
    truncated = index < len(keys) and keys[index].startswith(prefix)
    more = (
        f"<NextKeyMarker>{text(keys[index - 1])}</NextKeyMarker>"
        "<NextVersionIdMarker>null</NextVersionIdMarker>"
        if truncated
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>{escape(bucket)}</Name><Prefix>{text(prefix)}</Prefix>"
        f"<KeyMarker>{text(marker)}</KeyMarker><VersionIdMarker></VersionIdMarker>"
        f"<MaxKeys>{PAGE}</MaxKeys>{'<EncodingType>url</EncodingType>' if encode else ''}"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{more}"
        f"{''.join(entries)}</ListVersionsResult>"
    ).encode()


def _serve(
    port: int, bucket: str, count: int, objects: Callable[[int], tuple[str, bytes]], ready: object
) -> None:
    pairs = sorted(objects(index) for index in range(count))
    keys = [key for key, _ in pairs]
    bodies = [body for _, body in pairs]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(url.query, True).items()}
            if url.path.strip("/") != bucket or "versions" not in query:
                self.send_error(501, "only ListObjectVersions is served")
                return
            body = _page(bucket, keys, bodies, query)
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()  # type: ignore[attr-defined]
    server.serve_forever()


@contextmanager
def listing_server(
    port: int, bucket: str, count: int, objects: Callable[[int], tuple[str, bytes]]
) -> Iterator[str]:
    """The endpoint of a server listing ``count`` objects, ``objects(index)`` giving each
    one's key and body (a module-level function: the server runs in a spawned process)."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(
        target=_serve, args=(port, bucket, count, objects, ready), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 300
        while not ready.wait(1):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the listing server did not come up ({process.exitcode=})")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.join(10)
