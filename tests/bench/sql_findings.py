"""What the SQL-at-size benchmark (tests/bench/sql_at_size.py) found over time, and what was done
about it: static text, with the figures measured while each change was made (each paragraph
says when); the table of the benchmark repeats the latest comparison live.
"""

from __future__ import annotations

import importlib

_MIGRATION_0006 = importlib.import_module("transcriber.migrations.versions.0006_segment_facility")
BEFORE_0006_VIEW = _MIGRATION_0006.OLD_SEGMENT_READINGS["postgresql"].replace(
    "CREATE VIEW segment_readings AS", "CREATE OR REPLACE VIEW segment_readings_0005 AS"
)
"""``segment_readings`` as 0001 made it (and 0005 left it), as ``segment_readings_0005``."""


def findings() -> list[str]:
    return [
        "**Full-text search** met its target from the first run, with no change: for a common "
        "word the planner walks `ix_transcript_segments_starts_at` backwards and stops at the "
        "20th match; for a rare one (1,300–1,700 matches of a million) it reads the GIN index "
        "and sorts the matches, 5–25 ms. Two-word searches of rare words are the slowest.",
        "",
        "**`segment_readings`, 2026-11-23: JIT off (migration 0004).** With PostgreSQL's "
        "default `jit = on` the query took database p50 1,317 ms and p95 1,794 ms at full "
        "size: a good plan, under it `JIT: … Inlining 101 ms, Optimization 426 ms, Emission "
        "278 ms`. The cause is the estimate of the readings in a segment's window: two "
        "inequalities against another table's columns get PostgreSQL's default selectivity of "
        "one third each, so it expects 5,556 readings per segment and sensor where there are "
        "about 10, a cost of 20 million, far over `jit_above_cost` (100,000). Migration 0004 "
        "sets `jit = off` for the database: p50 281 ms, p95 456 ms (load average about 5 from "
        "other benchmarks; 186–212 ms p50 in a quieter moment), over the target because of "
        "what the query returns (114,000–174,000 rows for a facility-day) and how it found "
        "them. Tried then, not kept: a covering index `(sensor_id, ts) INCLUDE (value)` (no "
        "difference out of the noise, 40 % more index on the largest table).",
        "",
        "**`segment_readings`, 2026-12-02: the facility on the segment, the window as a "
        "`LATERAL` subquery (migration 0006).** `EXPLAIN (ANALYZE)` at a tenth of the size "
        "showed where the time went: the estimate (now 4.7 million rows for 137,000) made "
        "the planner run the query in parallel, and merging the two processes' sorted rows "
        "(`Gather Merge`) took about half the time; a segment reached its facility only "
        "through `transcripts` and `audio_objects`, so all 20 facilities' segments of the "
        "day were joined before most were dropped; and asked by `facility_id` instead of "
        "its code, the planner merge-joined every reading of the facility's sensors: 3.5 s. "
        "Migration 0006 copies the facility onto `transcript_segments` (kept by triggers, "
        "index `(facility_id, starts_at)`) and reads each window of readings as a `LATERAL` "
        "subquery fenced with `OFFSET 0`, which the planner estimates as a range (25 "
        "readings, not 556, at a tenth of the size): no parallel plan, one primary-key probe "
        "per segment and sensor, an incremental sort on the segments' order. At a tenth of "
        "the size, with another process busy on both cores: 74 ms against 190 ms by code, "
        "142 ms against 3,764 ms by id. The same `LATERAL` form was tried before 0004, with "
        "JIT on, and kept out because it was still costed high enough to be compiled; with "
        "JIT off that no longer matters. A test (tests/test_schema.py) compares the old and "
        "the new view's answers on the same data, on PostgreSQL and SQLite."
        " By `facility_id` the query takes about twice as long (156 ms p50 at full size): the "
        "planner reads the day's segments by `starts_at` and drops the other facilities', "
        "because it costs the `(facility_id, starts_at)` index as random page reads "
        "(`random_page_cost = 4`, the default); with `random_page_cost = 1.1`, the usual "
        "setting for SSDs or a database held in memory, it takes that index: 71 ms.",
    ]
