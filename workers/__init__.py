"""The Celery shell around :mod:`transcriber` (``celery -A workers worker``)."""
