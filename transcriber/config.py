"""Settings: the one place that reads the environment.

Every option is an environment variable with the prefix ``TRANSCRIBER_`` (or a line in a
``.env`` file in the working directory). Read them through :func:`get_settings`, which
builds the object once per process; tests build their own :class:`Settings` instead.
AWS credentials are deliberately absent: boto3 finds them through its own chain
(environment, profile, instance role), so they never pass through our settings or logs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
ComputeType = Literal[
    "auto",
    "default",
    "int8",
    "int8_float16",
    "int8_float32",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
]
Channels = Literal["mix", "split"]


@dataclass(frozen=True)
class ReadingTolerance:
    """How far a value said in a transcript may be from the sensor's reading and still agree
    with it: ``absolute`` in the sensor's unit, or ``percent`` of the reading (one is set)."""

    absolute: float | None = None
    percent: float | None = None


_TOLERANCE = re.compile(r"\s*([^=,%\s][^=,%]*?)\s*=\s*([^=,%]*?)\s*(%?)\s*")


def parse_reading_tolerances(text: str) -> dict[str, ReadingTolerance]:
    """``kind=number`` (absolute, in the sensor's unit) or ``kind=number%`` (of the reading),
    comma-separated, e.g. ``temperature=2,pressure=5%``; kinds compare case-insensitively.
    Raises ValueError, naming the entry, on anything else."""
    tolerances: dict[str, ReadingTolerance] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        match = _TOLERANCE.fullmatch(entry)
        if not match:
            raise ValueError(f"{entry.strip()!r} is not kind=number or kind=number%")
        kind, number, percent = match.group(1).lower(), match.group(2), match.group(3)
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{entry.strip()!r}: the tolerance must be a number of 0 or more")
        if kind in tolerances:
            raise ValueError(f"{entry.strip()!r}: {kind!r} is given twice")
        tolerances[kind] = ReadingTolerance(percent=value) if percent else ReadingTolerance(value)
    return tolerances


#: Fields a KEY_PATTERN may name; ``recorded_at`` is parsed as ISO 8601 (basic or extended).
KEY_PATTERN_FIELDS = frozenset({"facility", "sensor", "recorded_at", "ext", "name"})


class Settings(BaseSettings):
    """All configuration of the service. Field names map to ``TRANSCRIBER_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="TRANSCRIBER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # URLs may carry passwords: error messages quote values through redact_url only.
        hide_input_in_errors=True,
    )

    database_url: str = "sqlite:///./var/transcriber.db"
    """SQLAlchemy URL of the database. PostgreSQL in production
    (``postgresql+psycopg://user@host/db``); the default is a SQLite file under ``./var/``."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    """Celery broker URL (Redis)."""

    s3_endpoint_url: str = ""
    """S3 endpoint; empty means AWS. Set it for MinIO, moto or another S3-compatible store."""

    s3_bucket: str = "transcriber-audio"
    """Bucket that receives the audio."""

    s3_prefix: str = ""
    """Only keys under this prefix are transcribed."""

    s3_suffixes: str = ".wav,.flac,.mp3,.ogg,.opus,.oga,.m4a,.mp4,.aac,.webm,.aiff"
    """Only keys ending in one of these (comma-separated, case-insensitive) are transcribed."""

    sqs_queue_url: str = ""
    """SQS queue that gets the bucket's ObjectCreated notifications (``transcriber watch``)."""

    model: str = "tiny.en"
    """Whisper model: ``tiny.en`` (bundled), ``base``, ``small``, a faster-whisper hub name,
    or a local CTranslate2 model directory."""

    model_cache_dir: str = "./var/models"
    """Where the multilingual models' split ``model.bin`` parts are joined (once)."""

    device: Device = "auto"
    """``auto`` uses CUDA when CTranslate2 sees a GPU, else the CPU."""

    compute_type: ComputeType = "auto"
    """CTranslate2 compute type; ``auto`` is float16 on GPU and int8 on CPU."""

    cpu_threads: int = Field(default=0, ge=0)
    """CTranslate2 threads per model on CPU; 0 divides the machine's cores among the worker's
    processes."""

    batch_size: int = Field(default=16, ge=1, le=256)
    """Batch size of the batched inference pipeline (used on GPU)."""

    beam_size: int = Field(default=5, ge=1, le=20)
    """Beam size for decoding."""

    pack_max_seconds: float = Field(default=30.0, ge=0, le=30)
    """Short clips are transcribed together, laid end to end with 1 s of silence between
    them, in windows of at most this many seconds (Whisper's own window is 30 s, and a
    4 s clip alone costs as much encoder work as 30 s). Each clip still gets its own
    transcript. 0 turns packing off; otherwise from 10 to 30."""

    pack_max_clips: int = Field(default=32, ge=2, le=64)
    """The most jobs one task takes from the queue to pack together. Their windows go
    through the model side by side, their decoding batched: the more windows, the cheaper
    each (docs/benchmarks.md); a crash re-runs them all once, alone."""

    vad_filter: bool = True
    """Skip non-speech with the Silero VAD before decoding."""

    word_timestamps: bool = True
    """Store per-word timings in ``transcript_words``."""

    language: str = ""
    """Language code (``en``, ``de``, …); empty means detect per file."""

    initial_prompt: str = Field(default="", max_length=1000)
    """Text that primes the decoder (spelling of names, style); empty for none."""

    hotwords: str = Field(default="", max_length=1000)
    """Words to favour while decoding. Empty: the facility's name and its sensors' codes and
    descriptions, for audio placed at a facility (unless ``facility_hotwords`` is off)."""

    facility_hotwords: bool = True
    """With ``hotwords`` empty, favour the facility's terms for audio placed at one (README,
    Options: with tiny.en on CPU, measured no less accurate and as fast on audio that does
    not say them)."""

    channels: Channels = "mix"
    """``mix`` averages channels; ``split`` transcribes each channel on its own."""

    max_audio_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Larger objects fail with ``error_category=too_large`` before any download."""

    max_audio_seconds: float = Field(default=4 * 3600.0, gt=0)
    """Longer audio fails with ``error_category=too_long``; never decoded past this."""

    key_pattern: str = "{facility}/{sensor}/{recorded_at}.{ext}"
    """How object keys map to facility, sensor and recording time (after ``S3_PREFIX``)."""

    auto_register_sensors: bool = False
    """Create unknown facility and sensor codes met in keys or metadata instead of only
    keeping them in ``audio_objects.metadata``."""

    queue: str = "transcribe"
    """Celery queue the transcription tasks go to."""

    max_attempts: int = Field(default=3, ge=1)
    """Attempts before a job is marked failed."""

    worker_concurrency: int = Field(default=1, ge=1, le=64)
    """Worker processes per host (``celery worker -c``); CPU threads are divided among them."""

    task_time_limit: int = Field(default=3600, ge=10)
    """Hard limit in seconds for one transcription (the soft limit, 60 s or 10 % less, fails
    the job as ``timeout``)."""

    visibility_timeout: int = Field(default=0, ge=0)
    """Seconds before Redis hands an unacknowledged task (its worker host died) to another
    worker; 0 means ``TASK_TIME_LIMIT`` + 300. Must be longer than ``TASK_TIME_LIMIT``."""

    requeue_after_seconds: int = Field(default=900, ge=10)
    """On Redis, a message a worker has held reserved this long no longer counts as held by
    the broker (its worker may be gone). With a broker the sweeper cannot read, it publishes a
    queued job again when no worker started it for this long."""

    sweep_interval_seconds: int = Field(default=60, ge=1)
    """How often ``transcriber watch`` runs the sweeper."""

    reading_tolerances: str = "temperature=2,pressure=5%,humidity=5"
    """When a value said in a transcript agrees with its sensor's reading (the
    ``spoken_readings`` view), per sensor kind: ``kind=number``, within that much in the
    sensor's unit, or ``kind=number%``, within that percent of the reading; comma-separated.
    A kind not listed has no tolerance: its mentions' ``agrees`` is NULL. Written on each
    mention when its transcript is saved, so a change applies to jobs run after it."""

    @model_validator(mode="after")
    def _check_visibility_timeout(self) -> Settings:
        # Shorter, and Redis would hand a job that is still running to a second worker.
        if self.visibility_timeout and self.visibility_timeout <= self.task_time_limit:
            raise ValueError(
                f"TRANSCRIBER_VISIBILITY_TIMEOUT ({self.visibility_timeout}) must be longer "
                f"than TRANSCRIBER_TASK_TIME_LIMIT ({self.task_time_limit})"
            )
        return self

    @field_validator("pack_max_seconds")
    @classmethod
    def _check_pack_max_seconds(cls, value: float) -> float:
        if 0 < value < 10:
            raise ValueError("must be 0 (packing off) or from 10 to 30 seconds")
        return value

    @field_validator("reading_tolerances")
    @classmethod
    def _check_reading_tolerances(cls, value: str) -> str:
        parse_reading_tolerances(value)
        return value

    @property
    def tolerance_by_kind(self) -> dict[str, ReadingTolerance]:
        """``reading_tolerances`` read: sensor kind (lower-case) → its tolerance."""
        return parse_reading_tolerances(self.reading_tolerances)

    @property
    def soft_time_limit(self) -> int:
        """When a job is stopped and failed as ``timeout``: 60 s before the hard limit, or
        10 % before it for limits under ten minutes (time to record the failure)."""
        return max(self.task_time_limit - 60, self.task_time_limit * 9 // 10)

    @property
    def broker_visibility_timeout(self) -> int:
        """The visibility timeout the broker gets: the setting, or the time limit + 300 s."""
        return self.visibility_timeout or self.task_time_limit + 300

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        backend = scheme.split("+", 1)[0]
        if backend not in {"sqlite", "postgresql"}:
            raise ValueError(
                f"must be a sqlite:/// or postgresql+psycopg:// URL, got {redact_url(value)!r}"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"redis", "rediss", "amqp", "amqps", "sqs", "memory"}:
            raise ValueError(
                f"must be a redis://, amqp:// or sqs:// URL, got {redact_url(value)!r}"
            )
        return value

    @field_validator("s3_endpoint_url", "sqs_queue_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        if value and (
            urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc
        ):
            raise ValueError(f"must be empty or an http(s):// URL, got {value!r}")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", value):
            raise ValueError(f"is not a valid S3 bucket name: {value!r}")
        return value

    @field_validator("key_pattern")
    @classmethod
    def _check_key_pattern(cls, value: str) -> str:
        names = set(re.findall(r"{([^{}]*)}", value))
        unknown = names - KEY_PATTERN_FIELDS
        if unknown:
            raise ValueError(
                f"names unknown fields {sorted(unknown)}; allowed: {sorted(KEY_PATTERN_FIELDS)}"
            )
        return value

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z]{2,3}", value):
            raise ValueError(f"must be empty or a language code such as 'en', got {value!r}")
        return value

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
            raise ValueError(f"must be a plain queue name, got {value!r}")
        return value


# user:password@ up to the *last* '@': SQLAlchemy and libpq take a password with an unescaped
# '/', ':' or '@' in it, and stopping at the first of those would print the rest of it.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/]*):.*@([^@]*)$", re.DOTALL)
# libpq (and so psycopg) also takes ?password=..., and drivers accept tokens the same way.
_QUERY_SECRET = re.compile(r"([?&;][^=&;#]*(?:pass|secret|token)[^=&;#]*=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A URL safe to print or log: any password, in the user part or the query, replaced by
    ``***``. Errs on the side of hiding too much when the URL is ambiguous."""
    url = _URL_PASSWORD.sub(r"\1:***@\2", url)
    return _QUERY_SECRET.sub(r"\1***", url)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
