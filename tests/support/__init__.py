"""What the tests share: fixtures and helpers, one module per kind of thing.

- :mod:`tests.support.databases`: fresh SQLite and PostgreSQL databases (``db``,
  ``empty_db_url``, ``migrated_db_url``, ``databases``, ``postgres_server``), and the helpers
  ``create_job`` (an object with a queued job) and ``run_cli`` (``transcriber ARGS``).
- :mod:`tests.support.moto`: S3 and SQS on a moto server (``moto_server``, ``moto_bucket``,
  ``versioned_bucket``).
- :mod:`tests.support.service`: the whole service as subprocesses (``redis_server``, and
  :func:`~tests.support.service.service_fixture`, which makes a module's ``service`` fixture).
- :mod:`tests.support.speech`: real speech from the shared folder (``jfk_recording``).
- :mod:`tests.support.ingest`: S3 event records, uploads and a publish recorder for the
  ingest and watcher tests.
- :mod:`tests.support.reliability`: the fault marker's report (``figures``,
  ``--reliability-report``).
- :mod:`tests.support.poison_worker`: a Celery app whose decoder kills its process.
- :mod:`tests.support.broker`: task messages on a Redis queue, published and taken as the
  service does (``TaskQueue``), for the sweeper's tests.
- :mod:`tests.support.slow_worker`: a Celery app whose jobs each take two seconds and no model.
- :mod:`tests.support.transcripts`: segments with word timings as Whisper gives them
  (``whisper_segment``), for the tests that save transcripts and their readings said.
- :mod:`tests.support.demo_notes`: the demo's voice notes, what each says (the demo test's
  expectations), and how they are made and checked (``make demo-notes``).

The fixture modules are pytest plugins, registered once in ``tests/conftest.py``
(``pytest_plugins``): a test asks for a fixture by name and imports nothing for it. Plain
helpers are imported by name from their module.
"""

from __future__ import annotations

import os

# Where a service a test needs (PostgreSQL, Redis, the shared real-speech recording) is
# missing, the test skips, except when ``TEST_REQUIRE_SERVICES=1`` (set by ``.ci/run``): then
# it fails, so that CI can never go green without them.
REQUIRE_SERVICES = os.environ.get("TEST_REQUIRE_SERVICES") == "1"
