"""Promise 5 through the whole running service: a corpus of hostile input.

Every file of the corpus is uploaded at once, good files among them, into one stack (moto S3
wired to SQS, ``transcriber watch``, a real Celery worker, PostgreSQL) that runs with small
limits (60 s of audio, 2 MiB). Each case must end either with a transcript holding the words
that bare faster-whisper hears in its source file, or with a failed job of the right
``error_category`` and a message a user can read, after exactly one attempt; a key that is
not audio must never become a job. Afterwards nothing else is broken: the good files are
transcribed, the tables pass :meth:`Service.integrity_problems`, no scratch file is left
and every SQS message has been dealt with.

The hostile files are made here from the committed speech in tests/data (byte surgery,
numpy, soundfile). What bare ``transcriber transcribe`` hears in those files: sentence A
(speech_16k_mono.wav, speech_48k_mono.flac, speech_8k_mono.wav) says "... relief valve ...",
sentence B (speech_44k_stereo.mp3, both .ogg) "the cooling pump ..."; the check is one such
word, since the facility's hotwords may change the spelling of others.

Metadata tried, and what became of it (S3 limits user metadata to 2 KB and moto does not):
SQL in ``facility``/``sensor``/``recorded-at``; values near the 2 KB limit and 40 entries;
control characters and an ANSI escape (boto3 sends them); RFC 2047 values in UTF-8 and in
an unknown charset; raw latin-1 bytes in a header, sent by hand because boto3 refuses
non-ASCII metadata before sending. A CR/LF in a value is refused by the HTTP client, and
moto answers 404 to a key holding a newline, so neither can reach the service this way.
"""

from __future__ import annotations

import http.client
import io
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from tests.support.service import DATA, Service, service_fixture
from transcriber.storage import sqs_client

MAX_SECONDS = 60
MAX_BYTES = 2 * 1024 * 1024
# The whole corpus: one worker process on a busy 2-core machine takes about a minute.
CORPUS_TIMEOUT = 480.0
SQL = "'; DROP TABLE transcripts; --"
ESCAPE_NAME = "transcriber-p5-escape.wav"

Audio = npt.NDArray[np.float32]


# --- Making the corpus ----------------------------------------------------------------------


def _data(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _speech() -> Audio:
    """Sentence A, 16 kHz mono float32."""
    samples, rate = soundfile.read(DATA / "speech_16k_mono.wav", dtype="float32")
    assert rate == 16_000
    return np.asarray(samples, dtype=np.float32)


def _resampled(samples: Audio, rate: int) -> Audio:
    """``samples`` (16 kHz) at ``rate``; linear interpolation is plenty for speech."""
    count = int(len(samples) * rate / 16_000)
    positions = np.arange(count) * 16_000 / rate
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def _encoded(samples: Audio, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _wav_data_size(data: bytes, size: int) -> bytes:
    """A WAV file with its data chunk's size field set to ``size`` (the samples unchanged)."""
    at = data.index(b"data") + 4
    return data[:at] + struct.pack("<I", size) + data[at + 4 :]


def _wav_format_tag(data: bytes, tag: int) -> bytes:
    """A WAV file with another format tag in its fmt chunk (the samples unchanged)."""
    assert data[12:16] == b"fmt "
    return data[:20] + struct.pack("<H", tag) + data[22:]


def _flac_hiding_its_length(samples: Audio, rate: int) -> bytes:
    """FLAC whose STREAMINFO says "length unknown" (0 samples), as a live stream may."""
    data = bytearray(_encoded(samples, rate, "FLAC"))
    assert data[:4] == b"fLaC"
    assert data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    data[8 + 13] &= 0xF0  # the 36-bit total sample count: low 4 bits of byte 13 ...
    data[8 + 14 : 8 + 18] = b"\0\0\0\0"  # ... and bytes 14 to 17 of the block
    return bytes(data)


def _long_key() -> str:
    """A key of exactly 1,024 bytes of UTF-8, S3's longest."""
    key = "hostile/" + "ü" * 506 + ".wav"
    assert len(key.encode()) == 1024
    return key


# --- The cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the service made of one uploaded object: its job, audio facts and transcript."""

    status: str
    attempts: int = 0
    error_category: str | None = None
    error_message: str | None = None
    text: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    recorded_at_source: str | None = None
    facility_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One upload and what must come of it.

    ``expect`` is ``"transcript"``, ``"ignored"`` (no job) or the job's error category.
    A transcript must contain each of ``words`` (lower case), and its audio last
    ``seconds`` (±0.15 s) where given; a failure's message must contain ``says``.
    """

    id: str
    key: str
    body: Callable[[], bytes]
    expect: str
    words: tuple[str, ...] = ()
    seconds: float | None = None
    says: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    raw_metadata: dict[str, str] | None = None  # sent by hand, as latin-1 header bytes
    check: Callable[[Outcome], None] | None = None


def _stored_sql(outcome: Outcome) -> None:
    assert outcome.meta["facility"] == SQL
    assert outcome.meta["s3_metadata"]["sensor"] == "x'); DELETE FROM transcription_jobs; --"
    # Not a time: the key has no time either, so the object's LastModified is used.
    assert outcome.recorded_at_source == "last_modified"
    assert outcome.facility_id is None


def _stored_long(outcome: Outcome) -> None:
    stored = outcome.meta["s3_metadata"]
    assert len(stored["note"]) == 1024  # cut to 1,024 characters
    assert outcome.facility_id is not None  # plant-a still placed it


def _stored_many(outcome: Outcome) -> None:
    assert len(outcome.meta["s3_metadata"]) == 32  # at most 32 entries kept


def _stored_odd(outcome: Outcome) -> None:
    stored = outcome.meta["s3_metadata"]
    assert stored["note"] == "ünïcødé"  # RFC 2047 in UTF-8, decoded
    assert stored["unknown-charset"] == ""  # three NULs in a charset nobody knows: removed
    assert stored["control"] == "a[31mredb"  # control characters and DEL removed
    assert outcome.meta["sensor"] == "PT-1"


def _stored_latin1(outcome: Outcome) -> None:
    # HTTP headers are latin-1 on the wire, so the byte 0xE9 comes back as "é".
    assert outcome.meta["s3_metadata"]["note"] == "café"
    assert outcome.facility_id is not None


def _no_words(outcome: Outcome) -> None:
    assert outcome.text == ""  # not Whisper's "Thank you." over silence


def _placed_by_key(outcome: Outcome) -> None:
    assert outcome.recorded_at_source == "key"
    assert outcome.facility_id is not None


CASES: list[Case] = [
    # A good file first; more of them come in the middle and at the end.
    Case(
        "good-wav-placed-by-key",
        "plant-a/PT-1/20260314T100500Z.wav",
        lambda: _data("speech_16k_mono.wav"),
        "transcript",
        ("valve",),
        3.31,
        check=_placed_by_key,
    ),
    Case("empty-object", "hostile/empty.wav", lambda: b"", "empty", says="0 bytes"),
    Case(
        "random-bytes",
        "hostile/random.wav",
        lambda: np.random.default_rng(6).bytes(16_384),
        "unsupported",
        says="not a supported audio file",
    ),
    Case(
        "text-named-wav",
        "hostile/shift-log.wav",
        lambda: b"Shift log: relief valve checked, pressure normal.\n" * 40,
        "unsupported",
        says="not a supported audio file",
    ),
    Case(
        # If FFmpeg followed it, this playlist would read a real speech file on the worker.
        "playlist-named-wav",
        "hostile/playlist.wav",
        lambda: (
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:3.3,\n"
            f"{DATA.resolve() / 'speech_16k_mono.wav'}\n#EXT-X-ENDLIST\n"
        ).encode(),
        "unsupported",
    ),
    Case(
        "wav-cut-in-half",
        "hostile/cut.wav",
        lambda: _half(_data("speech_16k_mono.wav")),
        "corrupt",
        says="truncated",
    ),
    Case(
        "mp3-cut-in-half",
        "hostile/cut.mp3",
        lambda: _half(_data("speech_44k_stereo.mp3")),
        "corrupt",
        says="truncated",
    ),
    Case(
        "flac-cut-in-half",
        "hostile/cut.flac",
        lambda: _half(_data("speech_48k_mono.flac")),
        "corrupt",
        says="truncated",
    ),
    Case(
        # The index ("moov") of these m4a files comes last, as when a recorder app dies.
        "m4a-cut-in-half",
        "hostile/cut.m4a",
        lambda: _half(_data("speech_44k_mono.m4a")),
        "corrupt",
        says="MP4/M4A",
    ),
    Case(
        # Ogg has no length field to contradict: what is there is transcribed, as for a
        # stream that stopped ("The cooling pump is running", 1 s).
        "ogg-cut-in-half",
        "hostile/cut.ogg",
        lambda: _half(_data("speech_48k_mono.ogg")),
        "transcript",
        ("pump",),
        1.0,
    ),
    Case(
        "flac-named-wav",
        "hostile/really-flac.wav",
        lambda: _data("speech_48k_mono.flac"),
        "transcript",
        ("valve",),
        3.31,
    ),
    Case(
        "mp3-named-ogg",
        "hostile/really-mp3.ogg",
        lambda: _data("speech_44k_stereo.mp3"),
        "transcript",
        ("pump",),
        3.21,
    ),
    Case(
        "wav-header-claims-2h-holds-3s",
        "hostile/claims-two-hours.wav",
        lambda: _wav_data_size(_data("speech_16k_mono.wav"), 2 * 3600 * 32_000),
        "corrupt",
        says="truncated",
    ),
    Case(
        # 0xFFFFFFFF is what a writer puts there while it does not know the length yet.
        "wav-header-length-unknown",
        "hostile/streamed.wav",
        lambda: _wav_data_size(_data("speech_16k_mono.wav"), 0xFFFFFFFF),
        "transcript",
        ("valve",),
        3.31,
    ),
    Case(
        # The header's data chunk ends after 1 s; the rest is not audio by the format's rules.
        "wav-header-claims-1s-of-3s",
        "hostile/claims-one-second.wav",
        lambda: _wav_data_size(_data("speech_16k_mono.wav"), 32_000),
        "transcript",
        ("pressure",),
        1.0,
    ),
    Case(
        "wav-no-samples",
        "hostile/no-samples.wav",
        lambda: _encoded(np.zeros(0, np.float32), 16_000),
        "empty",
        says="no audio",
    ),
    Case(
        "wav-unknown-encoding",
        "hostile/format-tag-0x1234.wav",
        lambda: _wav_format_tag(_data("speech_16k_mono.wav"), 0x1234),
        "unsupported",
        says="encoding",
    ),
    Case(
        "silence-only",
        "hostile/silence.wav",
        lambda: _encoded(np.zeros(10 * 16_000, np.float32), 16_000),
        "transcript",
        seconds=10.0,
        check=_no_words,
    ),
    Case(
        "over-duration-by-header",
        "hostile/seventy-seconds.wav",
        lambda: _encoded(np.tile(_resampled(_speech(), 8_000), 22), 8_000),
        "too_long",
        says="TRANSCRIBER_MAX_AUDIO_SECONDS",
    ),
    Case(
        "over-duration-header-silent",
        "hostile/seventy-seconds-unknown-length.flac",
        lambda: _flac_hiding_its_length(np.tile(_resampled(_speech(), 8_000), 22), 8_000),
        "too_long",
        says="header did not say so",
    ),
    Case(
        "over-size",
        "hostile/too-big.wav",
        lambda: _encoded(
            np.tile(soundfile.read(DATA / "speech_44k_stereo.wav", dtype="float32")[0], (4, 1)),
            44_100,
        ),
        "too_large",
        says="TRANSCRIBER_MAX_AUDIO_BYTES",
    ),
    # A good file in the middle.
    Case(
        "good-mp3-placed-by-metadata",
        "good/voice-note.mp3",
        lambda: _data("speech_44k_stereo.mp3"),
        "transcript",
        ("pump",),
        3.21,
        metadata={"facility": "plant-a", "sensor": "TT-1", "recorded-at": "2026-03-14T10:20:00Z"},
    ),
    Case(
        "rate-8000",
        "rates/8000.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        3.31,
    ),
    Case(
        "rate-11025",
        "rates/11025.wav",
        lambda: _encoded(_resampled(_speech(), 11_025), 11_025),
        "transcript",
        ("valve",),
        3.31,
    ),
    Case(
        "rate-96000",
        "rates/96000.wav",
        lambda: _encoded(_resampled(_speech(), 96_000), 96_000),
        "transcript",
        ("valve",),
        3.31,
    ),
    Case(
        # Speech on four of six channels at different levels, two silent: the mix is speech.
        "six-channels",
        "rates/six-channels.wav",
        lambda: _encoded(np.stack([_speech() * g for g in (1, 0.8, 0.5, 0.3, 0, 0)], 1), 16_000),
        "transcript",
        ("valve",),
        3.31,
    ),
    Case(
        "rate-3000-too-low",
        "rates/3000.wav",
        lambda: _encoded(_resampled(_speech(), 3_000), 3_000),
        "unsupported",
        says="too low",
    ),
    Case(
        "rate-1-absurd",
        "rates/1.wav",
        lambda: _encoded(np.full(16, 0.1, np.float32), 1),
        "unsupported",
        says="too low",
    ),
    Case(
        "key-spaces-and-symbols",
        "keys/a key with spaces, 100% + #1?&=.ogg",
        lambda: _data("speech_16k_mono.ogg"),
        "transcript",
        ("pump",),
    ),
    Case(
        "key-unicode",
        "keys/ünïcødé/日本語の録音 🎙.flac",
        lambda: _data("speech_48k_mono.flac"),
        "transcript",
        ("valve",),
    ),
    Case(
        "key-dot-dot",
        f"../../../../../tmp/{ESCAPE_NAME}",
        lambda: _data("speech_16k_mono.wav"),
        "transcript",
        ("valve",),
    ),
    Case(
        "key-control-characters",
        "keys/ctl\x01\x1b[31m\ttab\x7f.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
    ),
    Case(
        "key-1024-bytes", _long_key(), lambda: _data("speech_8k_mono.wav"), "transcript", ("valve",)
    ),
    Case(
        # S3 allows NUL in a key, PostgreSQL text does not: the watcher must skip it, not stall.
        "key-with-nul",
        "keys/nul\x00byte.wav",
        lambda: _data("speech_8k_mono.wav"),
        "ignored",
    ),
    Case(
        "metadata-sql",
        "meta/sql.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        metadata={
            "facility": SQL,
            "sensor": "x'); DELETE FROM transcription_jobs; --",
            "recorded-at": "2026-03-14T10:15:00Z'; DROP TABLE sensor_readings; --",
        },
        check=_stored_sql,
    ),
    Case(
        "metadata-near-2kb",
        "meta/long.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        metadata={"facility": "plant-a", "note": "n" * 2020},
        check=_stored_long,
    ),
    Case(
        "metadata-40-entries",
        "meta/many.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        metadata={f"m{n:02d}": "v" * 45 for n in range(40)},
        check=_stored_many,
    ),
    Case(
        "metadata-rfc2047-and-control",
        "meta/odd.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        metadata={
            "facility": "plant-a",
            "sensor": "\x01PT-1\x1b",
            "note": "=?UTF-8?B?w7xuw69jw7hkw6k=?=",
            "unknown-charset": "=?x-unknown?B?AAAA?=",
            "control": "a\x1b[31mred\x7fb\x01",
        },
        check=_stored_odd,
    ),
    Case(
        "metadata-raw-latin1",
        "meta/latin1.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        raw_metadata={"facility": "plant-a", "note": "caf\xe9"},
        check=_stored_latin1,
    ),
    Case(
        "recorded-at-not-a-date",
        "plant-a/PT-1/20260314T101000Z.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        metadata={"recorded-at": "2026-02-30T25:61:00Z"},
        check=_placed_by_key,
    ),
    Case(
        # At the very end of datetime a segment's time overflowed: the job failed "internal".
        "recorded-at-year-9999",
        "plant-a/TT-1/20260314T101500Z.wav",
        lambda: _data("speech_8k_mono.wav"),
        "transcript",
        ("valve",),
        metadata={"recorded-at": "9999-12-31T23:59:59Z"},
        check=_placed_by_key,
    ),
    # And a good file last.
    Case(
        "good-flac",
        "good/voice-note.flac",
        lambda: _data("speech_48k_mono.flac"),
        "transcript",
        ("valve",),
        3.31,
    ),
]
GOOD = [case for case in CASES if case.id.startswith("good-")]


# --- The service and the run ----------------------------------------------------------------


service = service_fixture(
    "faults-input",
    TRANSCRIBER_MAX_AUDIO_SECONDS=str(MAX_SECONDS),
    TRANSCRIBER_MAX_AUDIO_BYTES=str(MAX_BYTES),
)


@dataclass(frozen=True)
class CorpusRun:
    outcomes: dict[str, Outcome]
    seconds: float


def _raw_put(service: Service, key: str, body: bytes, metadata: dict[str, str]) -> None:
    """PUT an object by hand: ``http.client`` sends header values as latin-1 bytes, which
    boto3 refuses to send at all."""
    endpoint = urlsplit(service.settings.s3_endpoint_url)
    connection = http.client.HTTPConnection(endpoint.hostname or "", endpoint.port, timeout=30)
    try:
        connection.putrequest("PUT", f"/{service.settings.s3_bucket}/{quote(key)}")
        for name, value in metadata.items():
            connection.putheader(f"x-amz-meta-{name}", value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    finally:
        connection.close()


def _outcomes(service: Service) -> dict[str, Outcome]:
    rows = service.query(
        "SELECT a.key, a.duration_s, a.sample_rate, a.channels, a.recorded_at_source, "
        "a.facility_id, a.metadata AS meta, j.status, j.attempts, j.error_category, "
        "j.error_message, t.text FROM audio_objects a "
        "JOIN transcription_jobs j ON j.audio_object_id = a.id "
        "LEFT JOIN transcripts t ON t.job_id = j.id"
    )
    return {
        row.key: Outcome(
            status=row.status,
            attempts=row.attempts,
            error_category=row.error_category,
            error_message=row.error_message,
            text=row.text,
            duration_s=row.duration_s,
            sample_rate=row.sample_rate,
            channels=row.channels,
            recorded_at_source=row.recorded_at_source,
            facility_id=row.facility_id,
            meta=row.meta,
        )
        for row in rows
    }


@pytest.fixture(scope="module")
def corpus_run(service: Service) -> CorpusRun:
    """Upload the whole corpus at once and wait until every job has finished."""
    started = time.monotonic()
    for case in CASES:
        if case.raw_metadata is not None:
            _raw_put(service, case.key, case.body(), case.raw_metadata)
        else:
            service.upload(case.key, case.body(), **case.metadata)
    expected = {case.key for case in CASES if case.expect != "ignored"}

    def all_finished() -> bool:
        done = {k for k, o in _outcomes(service).items() if o.status not in ("queued", "running")}
        return expected <= done

    service.wait_for("every job of the corpus to finish", all_finished, timeout=CORPUS_TIMEOUT)
    return CorpusRun(_outcomes(service), time.monotonic() - started)


# --- The checks -----------------------------------------------------------------------------


@pytest.mark.fault("P5")
@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_hostile_input_ends_in_a_transcript_or_one_clear_failure(
    case: Case, corpus_run: CorpusRun
) -> None:
    """Each file of the hostile corpus, uploaded with all the others: the words of its
    speech, or a failed job with the right category and a readable message after one
    attempt; a key that cannot be stored never becomes a job."""
    outcome = corpus_run.outcomes.get(case.key)
    if case.expect == "ignored":
        assert outcome is None
        return
    assert outcome is not None, f"{case.key!r} was never registered"
    if case.expect == "transcript":
        assert (outcome.status, outcome.error_category) == ("succeeded", None), outcome
        assert outcome.text is not None
        for word in case.words:
            assert word in outcome.text.lower(), outcome.text
        if case.seconds is not None:
            assert outcome.duration_s is not None
            assert abs(outcome.duration_s - case.seconds) <= 0.15, outcome.duration_s
    else:
        assert (outcome.status, outcome.error_category) == ("failed", case.expect), outcome
        message = outcome.error_message or ""
        assert case.says in message
        # For the person who dropped the file: a sentence, not a traceback or FFmpeg's errno.
        assert 10 <= len(message) <= 300
        assert not any(raw in message for raw in ("Traceback", "Errno", "Error:", "<"))
    assert outcome.attempts == 1, outcome
    if case.check is not None:
        case.check(outcome)


@pytest.mark.fault("P5")
def test_the_hostile_corpus_breaks_nothing_else(
    service: Service, corpus_run: CorpusRun, figures: dict[str, Any]
) -> None:
    """After the whole hostile corpus: the good files among it are transcribed, the tables
    are sound and whole, no scratch file is left, nothing escaped the worker's temporary
    directory, and every SQS event was dealt with."""
    outcomes = corpus_run.outcomes
    for case in GOOD:
        assert outcomes[case.key].status == "succeeded", (case.id, outcomes[case.key])
    assert service.integrity_problems() == []
    # Nothing was run twice: one attempt for every job of the corpus.
    assert {o.attempts for o in outcomes.values()} == {1}
    # The SQL in the metadata stayed data: every table is there with its rows.
    (counts,) = service.query(
        "SELECT (SELECT count(*) FROM sensor_readings) AS readings, "
        "(SELECT count(*) FROM transcription_jobs) AS jobs, "
        "(SELECT count(*) FROM transcripts) AS transcripts"
    )
    assert counts.readings == 240  # what readings_csv loaded
    assert counts.jobs == len(outcomes) == sum(1 for c in CASES if c.expect != "ignored")
    assert counts.transcripts == sum(1 for o in outcomes.values() if o.status == "succeeded")
    # Every job's scratch directory and download is gone; no file was named after a key.
    leftovers = [
        p for p in service.tmpdir.rglob("*") if p.name.startswith(("transcriber-job-", "s3-"))
    ]
    assert leftovers == []
    assert not (Path("/tmp") / ESCAPE_NAME).exists()
    assert not list(service.workdir.rglob(ESCAPE_NAME))
    # Every event was handled and deleted, the NUL key's too: the watcher is not stuck.
    sqs = sqs_client(service.settings)

    def queue_drained() -> bool:
        attributes = sqs.get_queue_attributes(
            QueueUrl=service.settings.sqs_queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return all(int(value) == 0 for value in attributes.values())

    service.wait_for("the SQS queue to drain", queue_drained, timeout=60)

    failed = Counter(o.error_category for o in outcomes.values() if o.status == "failed")
    figures["cases"] = len(CASES)
    figures["good files among them"] = len(GOOD)
    figures["transcribed"] = sum(1 for o in outcomes.values() if o.status == "succeeded")
    figures["failed, by category"] = ", ".join(f"{k} {n}" for k, n in sorted(failed.items()))
    figures["not registered (NUL in key)"] = len(CASES) - len(outcomes)
    figures["upload to last job finished (s)"] = corpus_run.seconds
