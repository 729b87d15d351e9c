"""transcriber.storage against a real moto server: object facts, exact-version downloads,
hostile keys, size limits, and how botocore's failures map onto the project's errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.utils
import pytest
from botocore.exceptions import ClientError

from tests.support.moto import free_port
from transcriber.config import Settings
from transcriber.errors import (
    AudioTooLarge,
    EmptyAudio,
    PermanentError,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
    Superseded,
)
from transcriber.storage import (
    ObjectInfo,
    _parse_timestamp,
    decode_header_value,
    download,
    head,
    iter_current_versions,
    iter_objects,
    put,
    s3_client,
    sqs_client,
    storage_error,
)

HOSTILE_KEYS = [
    "plant 1/PT 1/voice note.wav",
    "Zürich/Drucksensor-Ü/Ansage ünd Lärm.wav",
    "../../../escape.wav",
    "a/../../b/../../etc/passwd.wav",
    "/leading/slash.wav",
    "..",
    "dir/./.hidden.wav",
]


def upload(settings: Settings, key: str, body: bytes, **metadata: str) -> ObjectInfo:
    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body, Metadata=metadata)
    info = head(s3, settings.s3_bucket, key)
    assert info is not None
    return info


def test_an_upload_sends_an_object_created_notification(moto_bucket: Settings) -> None:
    sqs = sqs_client(moto_bucket)
    upload(moto_bucket, "plant/PT-1/20260314T101500Z.wav", b"RIFF")
    bodies = [
        m["Body"]
        for m in sqs.receive_message(
            QueueUrl=moto_bucket.sqs_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
    ]
    records = [r for body in bodies for r in json.loads(body).get("Records", [])]
    assert [r["eventName"] for r in records] == ["ObjectCreated:Put"]
    assert records[0]["s3"]["bucket"]["name"] == moto_bucket.s3_bucket


def test_head_reports_the_object_version(moto_bucket: Settings) -> None:
    s3 = s3_client(moto_bucket)
    s3.put_object(
        Bucket=moto_bucket.s3_bucket,
        Key="a.wav",
        Body=b"12345",
        ContentType="audio/wav",
        Metadata={"Facility": "P1", "recorded-at": "20260314T101500Z"},
    )
    info = head(s3, moto_bucket.s3_bucket, "a.wav")
    assert info is not None
    assert info.bucket == moto_bucket.s3_bucket
    assert info.key == "a.wav"
    assert info.version_id == ""
    assert info.etag == "827ccb0eea8a706c4c34a16891f84e7b"  # md5, quotes gone
    assert info.size_bytes == 5
    assert info.content_type == "audio/wav"
    assert info.last_modified.tzinfo == UTC
    assert info.metadata == {"facility": "P1", "recorded-at": "20260314T101500Z"}
    assert head(s3, moto_bucket.s3_bucket, "missing.wav") is None


def test_head_of_a_versioned_bucket_gives_version_ids(versioned_bucket: Settings) -> None:
    s3 = s3_client(versioned_bucket)
    first = upload(versioned_bucket, "k.wav", b"one")
    second = upload(versioned_bucket, "k.wav", b"two")
    assert first.version_id
    assert second.version_id
    assert first.version_id != second.version_id
    again = head(s3, versioned_bucket.s3_bucket, "k.wav", first.version_id)
    assert again == first
    s3.delete_object(Bucket=versioned_bucket.s3_bucket, Key="k.wav", VersionId=first.version_id)
    assert head(s3, versioned_bucket.s3_bucket, "k.wav", first.version_id) is None


def test_put_round_trips_metadata_outside_ascii(moto_bucket: Settings, tmp_path: Path) -> None:
    source = tmp_path / "note.wav"
    source.write_bytes(b"RIFF....WAVE")
    s3 = s3_client(moto_bucket)
    info = put(
        s3, moto_bucket.s3_bucket, "Zürich/ü.wav", source, {"Facility": "Zürich", "sensor": "T1"}
    )
    assert info.key == "Zürich/ü.wav"
    assert info.size_bytes == 12
    assert (info.content_type or "").startswith("audio/")  # from the file name
    assert info.metadata == {"facility": "Zürich", "sensor": "T1"}


def test_iter_objects_lists_under_the_prefix(moto_bucket: Settings) -> None:
    for key in ["in/a.wav", "in/b c.wav", "out/d.wav"]:
        upload(moto_bucket, key, b"x")
    listed = list(iter_objects(s3_client(moto_bucket), moto_bucket.s3_bucket, "in/"))
    assert [obj.key for obj in listed] == ["in/a.wav", "in/b c.wav"]
    assert all(obj.size_bytes == 1 and obj.etag and obj.last_modified.tzinfo for obj in listed)


def test_iter_current_versions_gives_the_current_version_ids(versioned_bucket: Settings) -> None:
    s3 = s3_client(versioned_bucket)
    upload(versioned_bucket, "in/a.wav", b"old")
    current = upload(versioned_bucket, "in/a.wav", b"newer")
    upload(versioned_bucket, "in/gone.wav", b"x")
    s3.delete_object(Bucket=versioned_bucket.s3_bucket, Key="in/gone.wav")  # a delete marker
    upload(versioned_bucket, "out/b.wav", b"x")
    listed = list(iter_current_versions(s3, versioned_bucket.s3_bucket, "in/"))
    assert [(o.key, o.version_id, o.etag, o.size_bytes) for o in listed] == [
        ("in/a.wav", current.version_id, current.etag, 5)
    ]
    assert listed[0].last_modified == current.last_modified


def test_iter_current_versions_without_versioning_gives_empty_ids(moto_bucket: Settings) -> None:
    upload(moto_bucket, "a.wav", b"x")
    listed = list(iter_current_versions(s3_client(moto_bucket), moto_bucket.s3_bucket))
    assert [(o.key, o.version_id) for o in listed] == [("a.wav", "")]


def test_download_brings_the_metadata_and_content_type(
    moto_bucket: Settings, tmp_path: Path
) -> None:
    s3 = s3_client(moto_bucket)
    s3.put_object(
        Bucket=moto_bucket.s3_bucket,
        Key="k.wav",
        Body=b"RIFF",
        ContentType="audio/wav",
        Metadata={"Facility": "P9", "sensor": "T1"},
    )
    info = head(s3, moto_bucket.s3_bucket, "k.wav")
    assert info is not None
    downloaded = download(s3, info, tmp_path, max_bytes=1000)
    assert downloaded.path.read_bytes() == b"RIFF"
    assert downloaded.content_type == "audio/wav"
    assert downloaded.metadata == info.metadata == {"facility": "P9", "sensor": "T1"}


def test_download_gets_the_registered_version_after_an_overwrite(
    versioned_bucket: Settings, tmp_path: Path
) -> None:
    s3 = s3_client(versioned_bucket)
    registered = upload(versioned_bucket, "k.wav", b"the old recording")
    upload(versioned_bucket, "k.wav", b"a newer recording")
    path = download(s3, registered, tmp_path, max_bytes=1000).path
    assert path.read_bytes() == b"the old recording"


def test_download_of_an_overwritten_object_without_versions_is_superseded(
    moto_bucket: Settings, tmp_path: Path
) -> None:
    s3 = s3_client(moto_bucket)
    registered = upload(moto_bucket, "k.wav", b"the old recording")
    first = download(s3, registered, tmp_path, max_bytes=1000)
    assert first.path.read_bytes() == b"the old recording"
    upload(moto_bucket, "k.wav", b"a newer recording")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(Superseded, match="overwritten or deleted"):
        download(s3, registered, scratch, max_bytes=1000)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("versioned", [False, True])
def test_download_of_a_deleted_object_is_superseded(
    moto_bucket: Settings, tmp_path: Path, versioned: bool
) -> None:
    s3 = s3_client(moto_bucket)
    if versioned:
        s3.put_bucket_versioning(
            Bucket=moto_bucket.s3_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    registered = upload(moto_bucket, "k.wav", b"audio")
    if versioned:
        s3.delete_object(Bucket=moto_bucket.s3_bucket, Key="k.wav", VersionId=registered.version_id)
    else:
        s3.delete_object(Bucket=moto_bucket.s3_bucket, Key="k.wav")
    with pytest.raises(Superseded) as raised:
        download(s3, registered, tmp_path, max_bytes=1000)
    assert raised.value.category == "superseded"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fault("P6")
def test_hostile_keys_download_into_the_directory_only(
    moto_bucket: Settings, tmp_path: Path
) -> None:
    s3 = s3_client(moto_bucket)
    outer = tmp_path / "outer"
    scratch = outer / "scratch"
    scratch.mkdir(parents=True)
    paths = []
    for index, key in enumerate(HOSTILE_KEYS):
        info = upload(moto_bucket, key, f"body {index}".encode())
        path = download(s3, info, scratch, max_bytes=1000).path
        assert path.parent == scratch
        assert path.read_bytes() == f"body {index}".encode()
        paths.append(path)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(paths)
    assert all("escape" not in p.name and ".." not in p.name for p in paths)


def test_an_object_over_the_limit_is_refused_before_its_body_is_written(
    moto_bucket: Settings, tmp_path: Path
) -> None:
    info = upload(moto_bucket, "big.wav", b"x" * 5000)
    with pytest.raises(AudioTooLarge):
        download(s3_client(moto_bucket), info, tmp_path, max_bytes=4999)
    assert list(tmp_path.iterdir()) == []
    exact = download(s3_client(moto_bucket), info, tmp_path, max_bytes=5000).path
    assert exact.stat().st_size == 5000


class _BrokenS3(BaseHTTPRequestHandler):
    """Answers every GET the way a failing S3-compatible server might: ``/b/short.wav``
    promises 100,000 bytes and hangs up after 10; ``/b/chunked.wav`` sends 5,000 bytes in
    chunks, with no Content-Length to check in advance."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("ETag", '"e"')
        if self.path.endswith("chunked.wav"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def broken_s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenS3)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Settings(s3_endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_cut_short_leaves_no_file(broken_s3: Settings, tmp_path: Path) -> None:
    info = ObjectInfo("b", "short.wav", "", "e", 100_000, None, datetime.now(UTC), {})
    with pytest.raises(StorageUnavailable):
        download(s3_client(broken_s3), info, tmp_path, max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []


def test_a_stream_past_the_limit_leaves_no_file(broken_s3: Settings, tmp_path: Path) -> None:
    info = ObjectInfo("b", "chunked.wav", "", "e", 5000, None, datetime.now(UTC), {})
    with pytest.raises(AudioTooLarge):
        download(s3_client(broken_s3), info, tmp_path, max_bytes=4000)
    assert list(tmp_path.iterdir()) == []
    exact = download(s3_client(broken_s3), info, tmp_path, max_bytes=5000)
    assert exact.path.stat().st_size == 5000


def test_an_empty_object_is_refused(moto_bucket: Settings, tmp_path: Path) -> None:
    info = upload(moto_bucket, "empty.wav", b"")
    with pytest.raises(EmptyAudio):
        download(s3_client(moto_bucket), info, tmp_path, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_endpoint_is_storage_unavailable(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    settings = Settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    s3 = s3_client(settings)
    info = ObjectInfo("bucket", "k.wav", "", "etag", 1, None, datetime.now(UTC), {})
    with pytest.raises(StorageUnavailable):
        head(s3, "bucket", "k.wav")
    with pytest.raises(StorageUnavailable):
        download(s3, info, tmp_path, max_bytes=1000)
    with pytest.raises(StorageUnavailable):
        list(iter_objects(s3, "bucket", ""))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, StorageUnavailable),
        ("InternalError", 500, StorageUnavailable),
        ("Throttling", 400, StorageUnavailable),
        ("SomethingNew", 502, StorageUnavailable),
        ("TooManyRequests", 429, StorageUnavailable),
        ("AccessDenied", 403, StorageAccessDenied),
        ("403", 403, StorageAccessDenied),
        ("UnknownDenial", 403, StorageAccessDenied),
        ("InvalidObjectState", 403, StorageError),
        ("InvalidArgument", 400, StorageError),
    ],
)
def test_client_errors_map_to_transient_or_permanent(
    code: str, status: int, expected: type[Exception]
) -> None:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = ClientError(response, "GetObject")
    mapped = storage_error(error, "reading s3://b/k")
    assert type(mapped) is expected
    assert isinstance(mapped, PermanentError) == (expected is not StorageUnavailable)


def test_clients_are_built_once_per_process_and_endpoint(moto_server: str) -> None:
    first = s3_client(Settings(s3_endpoint_url=moto_server))
    assert s3_client(Settings(s3_endpoint_url=moto_server, s3_bucket="other")) is first
    assert s3_client(Settings(s3_endpoint_url=moto_server + "/")) is not first


def test_the_region_defaults_to_us_east_1(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    settings = Settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    assert s3_client(settings).meta.region_name == "us-east-1"
    # On AWS the queue's URL names its region; nothing is sent to build the client.
    aws = Settings(sqs_queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/audio")
    assert sqs_client(aws).meta.region_name == "eu-west-1"


def test_metadata_values_are_decoded_from_rfc_2047() -> None:
    assert decode_header_value("=?UTF-8?B?WsO8cmljaA==?=") == "Zürich"
    assert decode_header_value("=?UTF-8?B?//4=?=") == "\ufffd\ufffd"  # not UTF-8
    assert decode_header_value("=?x-unknown?Q?abc?=") == "abc"
    assert decode_header_value("plain =? text") == "plain =? text"


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-14T10:15:02.000Z",  # listings
        "2026-03-14T10:15:02.123456+01:00",
        "Sat, 14 Mar 2026 10:15:02 GMT",  # headers
        "2026-03-14T10:15:02",  # no zone: botocore's rules
        1700000000,  # epoch numbers, as JSON protocols send them
        "1700000000.5",
    ],
)
def test_timestamps_parse_as_botocore_parses_them(value: str | int) -> None:
    # The stubs say str only; botocore takes epoch numbers too.
    assert _parse_timestamp(value) == botocore.utils.parse_timestamp(value)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _parse_timestamp("not a time")
