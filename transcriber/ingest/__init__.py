"""The bucket side: from objects in S3 to queued job rows.

- :mod:`~transcriber.ingest.events`: S3 event notifications, read from SQS messages;
- :mod:`~transcriber.ingest.registration`: object versions recorded, one job per new version;
- :mod:`~transcriber.ingest.scan`: the bucket listed, to register what events missed;
- :mod:`~transcriber.ingest.watch`: the watcher, events to registrations, round after round.

Where an object belongs (facility, sensor, recording time) is :mod:`transcriber.placement`,
which the job path uses too. Nothing outside ``transcriber.cli`` and the tests imports this
package: the job path (:mod:`transcriber.job_run`) never calls back up into it.
"""
