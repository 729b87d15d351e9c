"""Real speech through the whole service comes out as bare faster-whisper hears it.

A facility's vocabulary, given as hotwords, once made tiny.en go on after the speech ("...
for your country. Thank you. Thank you."). The public-domain JFK recording from the shared
real-speech folder (tests/support/speech.py; never copied into the repository), uploaded as
a note of the demo facility houston-bay, goes through the whole service with the default
settings: moto S3 → SQS → watcher → Redis → Celery worker → PostgreSQL. Bare faster-whisper,
the same model with ``beam_size=5`` and nothing else, transcribes the same file in this
process; WER after Whisper's English normaliser.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from tests.support.service import START, Service, service_fixture
from tests.support.speech import JFK_TEXT
from transcriber import demo_data
from transcriber.config import Settings
from transcriber.model_files import resolve
from transcriber.sensors import load_files

_normalise = EnglishTextNormalizer()


def _demo_facilities(stack: Service) -> None:
    """The demo facilities and their sensors, with a day of readings."""
    demo = demo_data.write_csv(stack.workdir / "demo", days=1, start=START - timedelta(hours=12))
    load_files(stack.engine, list(demo.values()))


# The service with the demo facilities and their sensors loaded.
service = service_fixture("real-speech", setup=_demo_facilities)


def _bare(path: Path) -> str:
    from faster_whisper import WhisperModel

    model = WhisperModel(resolve("tiny.en", Path(Settings().model_cache_dir)), device="cpu")
    segments, _ = model.transcribe(str(path), beam_size=5)
    return " ".join(segment.text.strip() for segment in segments)


def _wer(text: str) -> float:
    return float(jiwer.wer(_normalise(JFK_TEXT), _normalise(text)))


def test_jfk_at_a_facility_comes_out_as_bare_faster_whisper_hears_it(
    service: Service, jfk_recording: Path
) -> None:
    key = "real-speech/jfk.flac"
    service.upload(
        key,
        jfk_recording.read_bytes(),
        facility="houston-bay",
        **{"recorded-at": START.isoformat()},
    )
    service.wait_for(f"{key} transcribed", service.succeeded(key), timeout=120)
    (row,) = service.query(
        "SELECT t.text, j.options FROM transcripts t "
        "JOIN transcription_jobs j ON j.id = t.job_id "
        "JOIN audio_objects a ON a.id = t.audio_object_id WHERE a.key = :key",
        key=key,
    )
    # It really ran with the facility's vocabulary as hotwords: the default for placed audio.
    assert "Houston Bay Chemical Plant" in row.options["hotwords"]
    bare = _bare(jfk_recording)
    assert _wer(row.text) <= _wer(bare) + 0.01, f"service: {row.text!r}; bare: {bare!r}"
    # Not one word after the last spoken one ("Thank you." came after it before).
    said = _normalise(row.text).split()
    assert said[-1] == "country", row.text
    assert said.count("country") == _normalise(JFK_TEXT).split().count("country"), row.text
