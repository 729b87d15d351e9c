"""Every error this package raises on purpose, in one hierarchy.

Each class carries a ``category``: for an error that ends a job it is what
``transcription_jobs.error_category`` records, and the CLI prints it after the message. The
message is written for the user who dropped the file or ran the command, not for a
developer. Three branches say what the caller should do:

- :class:`PermanentError`: retrying cannot help (bad input, a configuration that cannot work);
  a job fails at once.
- :class:`TransientError`: may succeed later (a network, storage or database hiccup); a job
  goes back in the queue and the Celery task retries with backoff.
- the rest derive from :class:`TranscriberError` directly: they are not about a job's input
  (a schema not migrated, a sensor file that cannot be loaded, a lease another worker took).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar


class TranscriberError(Exception):
    """Base of every error this package raises on purpose."""

    category: ClassVar[str] = "error"


class PermanentError(TranscriberError):
    """Retrying cannot help: bad input, or a configuration that cannot work."""

    category = "permanent"


class TransientError(TranscriberError):
    """May succeed later: a network, storage or database hiccup."""

    category = "transient"


# --- Jobs -----------------------------------------------------------------------------------


class Superseded(PermanentError):
    """The object version the job is for was overwritten or deleted before it ran."""

    category = "superseded"


class LeaseLost(TranscriberError):
    """Another worker took the job over; this one must not write its result."""

    category = "lease_lost"


class DatabaseUnavailable(TransientError):
    """The database did not answer."""

    category = "database"


class NotMigrated(TranscriberError):
    """The database schema is missing or older than this code."""

    category = "not_migrated"


# --- The bucket -----------------------------------------------------------------------------


class StorageUnavailable(TransientError):
    """S3 or SQS did not answer, or answered with a server error."""

    category = "storage"


class StorageError(PermanentError):
    """S3 refused the request in a way that asking again will not change."""

    category = "storage_error"


class StorageAccessDenied(StorageError):
    """The credentials may not read (or write) the object.

    Permanent, not transient: a missing IAM or KMS permission does not fix itself within a
    task's retry window, and retrying only burns the job's attempts on the same answer. The
    job fails at once with ``error_category='access_denied'``; once the policy is fixed,
    ``celery -A workers transcriber retry --failed`` runs it again. (S3 also answers 403
    instead of 404 for a missing key when the caller lacks ``s3:ListBucket``, which is a
    permanent condition as well.)
    """

    category = "access_denied"


class BadEvent(PermanentError):
    """An SQS message that is not an S3 event notification (the watcher logs and drops it)."""

    category = "bad_event"


# --- Audio ----------------------------------------------------------------------------------


class AudioError(PermanentError):
    """Audio that can never be transcribed: retrying will not help."""

    category = "bad_audio"


class EmptyAudio(AudioError):
    category = "empty"


class UnsupportedAudio(AudioError):
    category = "unsupported"


class CorruptAudio(AudioError):
    category = "corrupt"


class AudioTooLong(AudioError):
    category = "too_long"


class AudioTooLarge(AudioError):
    category = "too_large"


# --- The model ------------------------------------------------------------------------------


class ModelUnavailable(PermanentError):
    """The configured model cannot be found, verified or loaded."""

    category = "model_unavailable"


class UnsupportedLanguage(PermanentError):
    """The language asked for is one the model cannot transcribe."""

    category = "unsupported_language"


# --- Around the service ---------------------------------------------------------------------


class EmbeddedUnavailable(PermanentError):
    """The embedded stack (`transcriber up`, `make demo`) cannot start."""

    category = "embedded"


class SensorDataError(TranscriberError, ValueError):
    """A sensor CSV file that cannot be loaded; names the file and line. (Also a
    ``ValueError``: it is a value in a file that is wrong.)"""

    category = "sensor_data"

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path.name}, line {line}" if line else path.name
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class UnknownFacility(TranscriberError, LookupError):
    """A command named a facility code that no facility has (``mentions rebuild --facility``)."""

    category = "unknown_facility"
