"""The Celery shell around :mod:`transcriber`: ``celery -A workers worker``."""

from workers.app import app

__all__ = ["app"]
