"""`transcriber transcribe` (no services) and `transcriber export` (from the database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import srt  # type: ignore[import-untyped]
import webvtt
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.support.databases import create_job, run_cli
from transcriber.config import Settings
from transcriber.job_options import TranscribeOptions
from transcriber.speech_model import ModelConfig, get_model, transcribe_file
from transcriber.transcripts import save_transcription

DATA = Path(__file__).parent / "data"
# The project must never need the network: this runs the CLI with every connection refused.
NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
from transcriber.cli import main
main(sys.argv[1:], prog_name="transcriber")
"""


def _offline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSCRIBER_", "HF_"))}
    return subprocess.run(
        [sys.executable, "-c", NO_NETWORK, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_transcribe_offline_reports_each_file(tmp_path: Path) -> None:
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(os.urandom(4096))
    done = _offline(
        "transcribe",
        str(DATA / "speech_16k_mono.wav"),
        str(bad),
        str(DATA / "two_party_stereo.wav"),
        "--format",
        "json",
        "--words",
        "--channels",
        "split",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    entries = json.loads(done.stdout)
    assert [Path(e["file"]).name for e in entries] == [
        "speech_16k_mono.wav",
        "not-audio.wav",
        "two_party_stereo.wav",
    ]
    good, failed, split = entries
    assert "valve" in good["text"]
    assert good["language"] == "en"
    assert good["segments"][0]["words"][0]["word"].strip()
    assert failed["error_category"] == "unsupported"
    assert "not a supported audio file" in failed["error"]
    assert {s["channel"] for s in split["segments"]} == {0, 1}
    assert f"{bad}: not a supported audio file" in done.stderr
    assert "1 of 3 files failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_transcribe_writes_subtitles_per_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _offline(
        "transcribe",
        str(DATA / "speech_44k_stereo.mp3"),
        str(DATA / "speech_48k_stereo.webm"),
        "--format",
        "vtt",
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for name in ("speech_44k_stereo.vtt", "speech_48k_stereo.vtt"):
        captions = webvtt.from_string((out / name).read_text()).captions
        assert "pump" in " ".join(c.text for c in captions).lower()


def test_hub_model_offline_fails_at_once_with_advice(tmp_path: Path) -> None:
    done = _offline(
        "transcribe", str(DATA / "speech_16k_mono.wav"), "--model", "large-v3", cwd=tmp_path
    )
    assert done.returncode == 1
    assert "cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr


def test_export_a_stored_transcript_as_srt(
    db: Engine, migrated_db_url: str, tmp_path: Path
) -> None:
    settings = Settings()
    result = transcribe_file(
        DATA / "speech_48k_mono.flac",
        TranscribeOptions.from_settings(settings),
        get_model(ModelConfig.from_settings(settings)),
        settings,
    )
    job_id = create_job(db, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), key="k.flac")
    with Session(db) as session, session.begin():
        save_transcription(session, job_id, result)
    target = tmp_path / "job.srt"
    done = run_cli(migrated_db_url, "export", str(job_id), "--format", "srt", "-o", str(target))
    assert done.returncode == 0, done.stderr
    cues = list(srt.parse(target.read_text()))
    assert " ".join(c.content for c in cues) == result.text
    assert [c.start for c in cues] == sorted(c.start for c in cues)
    missing = run_cli(migrated_db_url, "export", str(job_id + 1000))
    assert missing.returncode == 1
    assert f"job {job_id + 1000} has no transcript" in missing.stderr
