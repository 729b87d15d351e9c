"""The error hierarchy: permanent errors fail a job at once, transient ones are retried.

Each class carries the ``category`` recorded in ``transcription_jobs.error_category``; the
message is written for the user who dropped the file, not for a developer.
"""

from __future__ import annotations

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


class Superseded(PermanentError):
    """The object version the job is for was overwritten or deleted before it ran."""

    category = "superseded"


class StorageUnavailable(TransientError):
    """S3 or SQS did not answer, or answered with a server error."""

    category = "storage"


class DatabaseUnavailable(TransientError):
    """The database did not answer."""

    category = "database"


class ModelUnavailable(PermanentError):
    """The configured model cannot be found or loaded."""

    category = "model_unavailable"


class UnsupportedLanguage(PermanentError):
    """The language asked for is one the model cannot transcribe."""

    category = "unsupported_language"
