"""Settings: defaults, the environment, .env files, validation, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from transcriber.config import Settings, get_settings, redact_url

README = Path(__file__).parents[1] / "README.md"


def test_defaults_run_offline_on_the_embedded_stack() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///./var/transcriber.db"
    assert settings.model == "tiny.en"
    assert settings.device == "auto"
    assert settings.compute_type == "auto"
    assert settings.s3_endpoint_url == ""
    assert settings.queue == "transcribe"


def test_environment_with_prefix_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCRIBER_DEVICE", "cuda")
    monkeypatch.setenv("TRANSCRIBER_BEAM_SIZE", "2")
    monkeypatch.setenv("TRANSCRIBER_VAD_FILTER", "false")
    monkeypatch.setenv("DEVICE", "cpu")  # no prefix: not ours
    settings = Settings()
    assert (settings.device, settings.beam_size, settings.vad_filter) == ("cuda", 2, False)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TRANSCRIBER_MODEL=small\nTRANSCRIBER_MAX_ATTEMPTS=5\n")
    settings = Settings()
    assert (settings.model, settings.max_attempts) == ("small", 5)


def test_get_settings_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("TRANSCRIBER_MODEL", "base")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().model == "base"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEVICE", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("COMPUTE_TYPE", "int4", "int8"),
        ("MAX_AUDIO_BYTES", "0", "greater than 0"),
        ("MAX_AUDIO_SECONDS", "-5", "greater than 0"),
        ("BEAM_SIZE", "0", "greater than or equal to 1"),
        ("MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("DATABASE_URL", "mysql://u@h/db", "sqlite:/// or postgresql"),
        ("BROKER_URL", "http://localhost", "redis://"),
        ("S3_ENDPOINT_URL", "localhost:9000", "http(s)://"),
        ("SQS_QUEUE_URL", "queue", "http(s)://"),
        ("S3_BUCKET", "Not_A_Bucket", "bucket name"),
        ("KEY_PATTERN", "{site}/{recorded_at}.{ext}", "unknown fields ['site']"),
        ("LANGUAGE", "english", "language code"),
        ("CHANNELS", "stereo", "'mix' or 'split'"),
        ("QUEUE", "a queue", "plain queue name"),
        ("VISIBILITY_TIMEOUT", "3600", "must be longer than TRANSCRIBER_TASK_TIME_LIMIT (3600)"),
        ("PACK_MAX_SECONDS", "5", "0 (packing off) or from 10 to 30 seconds"),
        ("PACK_MAX_SECONDS", "45", "less than or equal to 30"),
        ("PACK_MAX_CLIPS", "1", "greater than or equal to 2"),
        ("READING_TOLERANCES", "temperature=2,pressure", "'pressure' is not kind=number"),
        ("READING_TOLERANCES", "humidity=-5", "a number of 0 or more"),
        ("READING_TOLERANCES", "humidity=5,humidity=6%", "'humidity' is given twice"),
    ],
)
def test_invalid_values_are_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"TRANSCRIBER_{name}", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert message in str(info.value)


def test_visibility_timeout_defaults_to_outlast_the_time_limit() -> None:
    assert Settings(task_time_limit=600).broker_visibility_timeout == 900
    assert Settings(task_time_limit=20, visibility_timeout=30).broker_visibility_timeout == 30


def test_passwords_never_reach_error_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCRIBER_DATABASE_URL", "mysql://admin:hunter2@db/x")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "hunter2" not in str(info.value)
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("postgresql+psycopg://u:p%40ss@h/db") == "postgresql+psycopg://u:***@h/db"


def _readme_settings() -> dict[str, str]:
    """TRANSCRIBER_* rows of the README's settings table: name -> default as written."""
    pattern = r"^\| `TRANSCRIBER_(\w+)` \| (?:`([^`]*)`|\(empty\)) \|"
    rows = re.findall(pattern, README.read_text(), re.M)
    return {name.lower(): default for name, default in rows}


def test_readme_settings_table_matches_the_settings_object() -> None:
    documented = _readme_settings()
    fields = Settings.model_fields
    assert set(documented) == set(fields), "README settings table and Settings differ"
    for name, field in fields.items():
        default = field.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        if isinstance(default, float) and default.is_integer():
            shown = str(int(default))
        assert documented[name] == shown, f"README default of TRANSCRIBER_{name.upper()}"


def test_the_soft_time_limit_leaves_time_to_record_a_timeout() -> None:
    assert Settings(task_time_limit=3600).soft_time_limit == 3540
    assert Settings(task_time_limit=20).soft_time_limit == 18
