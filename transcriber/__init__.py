"""transcriber: batch speech-to-text for audio in S3, transcripts in SQL next to sensor data."""

__version__ = "0.1.0"
__all__ = ["__version__"]
