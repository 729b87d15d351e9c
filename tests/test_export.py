"""Exports: every format parses with an independent reader, whatever the segments hold."""

from __future__ import annotations

import html
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
import srt  # type: ignore[import-untyped]
import webvtt

from transcriber.export import (
    FORMATS,
    ExportFormat,
    render,
    to_json,
    to_json_dict,
    to_srt,
    to_tsv,
    to_txt,
    to_vtt,
)
from transcriber.results import Segment, SpokenReading, Transcription, Word


def _transcription(*segments: Segment, duration_s: float = 10.0) -> Transcription:
    return Transcription(
        language="en",
        language_probability=0.98,
        duration_s=duration_s,
        segments=segments,
        model="tiny.en",
        processing_s=1.25,
    )


def _parse_srt(text: str) -> list[srt.Subtitle]:
    # ignore_errors=False (the default) makes any malformed block an error, not a skip.
    return list(srt.parse(text))


def _parse_vtt(text: str) -> list[webvtt.Caption]:
    # strict=True raises on malformed cue blocks instead of silently dropping them.
    return list(webvtt.from_string(text, strict=True).captions)


SIMPLE = _transcription(
    Segment(0.0, 2.5, " Hello there."),
    Segment(2.5, 4.0, " How are you?"),
    Segment(4.0, 4.5, "   "),  # silence the model still returned: no cue
    Segment(5.123, 7.9876, " Fine, thanks."),
)

# Two parties on two channels, handed over shuffled; one segment ends before it starts and
# one ties on start with another channel.
TWO_PARTY_SEGMENTS = [
    Segment(0.0, 1.5, " Good morning.", channel=0),
    Segment(1.0, 2.0, " Morning!", channel=1),
    Segment(2.0, 3.0, " Ready?", channel=0),
    Segment(2.0, 2.8, " Yes.", channel=1),
    Segment(4.2, 3.9, " Backwards end.", channel=1),
    Segment(5.0, 6.0, " Let's begin.", channel=0),
]
TWO_PARTY_ORDER = [
    (0, "Good morning."),
    (1, "Morning!"),
    (0, "Ready?"),
    (1, "Yes."),
    (1, "Backwards end."),
    (0, "Let's begin."),
]

NASTY_TEXT = " a --> b\n\nnew line <b>bold</b> & co --->\r\nend"


def _shuffled_two_party(seed: int) -> Transcription:
    segments = list(TWO_PARTY_SEGMENTS)
    random.Random(seed).shuffle(segments)
    return _transcription(*segments)


def test_formats_match_the_literal() -> None:
    assert set(FORMATS) == set(get_args(ExportFormat))
    assert len(FORMATS) == len(set(FORMATS))


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_dispatches(fmt: ExportFormat) -> None:
    expected = {
        "srt": to_srt(SIMPLE),
        "vtt": to_vtt(SIMPLE),
        "json": to_json(SIMPLE),
        "txt": to_txt(SIMPLE),
        "tsv": to_tsv(SIMPLE),
    }
    assert render(SIMPLE, fmt) == expected[fmt]


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown export format 'docx'"):
        render(SIMPLE, "docx")  # type: ignore[arg-type]


def test_render_passes_words_to_json() -> None:
    result = _transcription(Segment(0.0, 1.0, " Hi", words=(Word(0.0, 1.0, " Hi", 0.9),)))
    assert "words" in json.loads(render(result, "json", words=True))["segments"][0]
    assert "words" not in json.loads(render(result, "json"))["segments"][0]


SAID = SpokenReading(
    start=1.23456,
    end=1.2,  # ends before it starts: clamped like a segment
    said_at=datetime(2026, 5, 4, 8, 30, 1, 234560, tzinfo=UTC),
    spoken_text="190 kPa",
    spoken_value=190.0,
    spoken_unit="kilopascal",
    sensor_code="PT-201",
    sensor_unit="kPa",
    value_in_sensor_unit=190.0,
    attribution="named",
    sensor_text="PT-201",
    match_score=100.0,
    probability=0.86,
    reading_ts=datetime(2026, 5, 4, 8, 31, tzinfo=UTC),
    reading_value=188.0,
    difference=2.0,
    agrees=True,
)
UNATTRIBUTED = replace(
    SAID,
    sensor_code=None,
    sensor_unit=None,
    value_in_sensor_unit=None,
    attribution=None,
    sensor_text=None,
    match_score=None,
    reading_ts=None,
    reading_value=None,
    difference=None,
    agrees=None,
)


def test_json_lists_the_readings_said_when_given_them() -> None:
    data = json.loads(render(SIMPLE, "json", mentions=[SAID, UNATTRIBUTED]))
    assert data["mentions"][0] == {
        "start": 1.235,
        "end": 1.235,
        "said_at": "2026-05-04T08:30:01.234560+00:00",
        "spoken_text": "190 kPa",
        "spoken_value": 190.0,
        "spoken_unit": "kilopascal",
        "sensor_code": "PT-201",
        "sensor_unit": "kPa",
        "value_in_sensor_unit": 190.0,
        "attribution": "named",
        "sensor_text": "PT-201",
        "match_score": 100.0,
        "probability": 0.86,
        "reading_ts": "2026-05-04T08:31:00+00:00",
        "reading_value": 188.0,
        "difference": 2.0,
        "agrees": True,
    }
    assert data["mentions"][1]["reading_ts"] is None
    assert data["mentions"][1]["agrees"] is None
    # The rest of the document is what it is without them.
    assert {k: v for k, v in data.items() if k != "mentions"} == to_json_dict(SIMPLE, words=False)
    assert to_json_dict(SIMPLE, words=False, mentions=[])["mentions"] == []
    # No mentions given (a local file): no such key.
    assert "mentions" not in to_json_dict(SIMPLE, words=False)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
def test_only_json_has_a_place_for_the_readings_said(fmt: ExportFormat) -> None:
    assert render(SIMPLE, fmt, mentions=[SAID]) == render(SIMPLE, fmt)


def test_srt_parses_with_numbered_cues() -> None:
    output = to_srt(SIMPLE)
    subtitles = _parse_srt(output)

    assert [s.index for s in subtitles] == [1, 2, 3]
    assert [s.content for s in subtitles] == ["Hello there.", "How are you?", "Fine, thanks."]
    assert subtitles[0].start == timedelta(0)
    assert subtitles[0].end == timedelta(seconds=2.5)
    assert subtitles[2].start == timedelta(milliseconds=5123)
    assert subtitles[2].end == timedelta(milliseconds=7988)
    assert "00:00:05,123 --> 00:00:07,988" in output
    # A blank line, and only one, between cues.
    assert "\n\n2\n" in output
    assert "\n\n\n" not in output


def test_vtt_parses_with_header() -> None:
    output = to_vtt(SIMPLE)
    captions = _parse_vtt(output)

    assert output.startswith("WEBVTT\n\n")
    assert [c.text for c in captions] == ["Hello there.", "How are you?", "Fine, thanks."]
    assert [c.start for c in captions] == ["00:00:00.000", "00:00:02.500", "00:00:05.123"]
    assert [c.end for c in captions] == ["00:00:02.500", "00:00:04.000", "00:00:07.988"]
    assert all(c.voice is None for c in captions)


@pytest.mark.parametrize("seed", range(5))
def test_srt_orders_shuffled_channels(seed: int) -> None:
    subtitles = _parse_srt(to_srt(_shuffled_two_party(seed)))

    assert [s.index for s in subtitles] == list(range(1, len(TWO_PARTY_ORDER) + 1))
    assert [s.content for s in subtitles] == [f"[ch {ch}] {text}" for ch, text in TWO_PARTY_ORDER]
    starts = [s.start for s in subtitles]
    assert starts == sorted(starts)
    assert all(s.end >= s.start for s in subtitles)
    backwards = subtitles[4]
    assert backwards.start == backwards.end == timedelta(seconds=4.2)


@pytest.mark.parametrize("seed", range(5))
def test_vtt_orders_shuffled_channels_as_voices(seed: int) -> None:
    captions = _parse_vtt(to_vtt(_shuffled_two_party(seed)))

    assert [(c.voice, c.text) for c in captions] == [
        (f"ch {ch}", text) for ch, text in TWO_PARTY_ORDER
    ]
    starts = [c.start_time.in_milliseconds() for c in captions]
    assert starts == sorted(starts)
    assert all(c.end_time >= c.start_time for c in captions)


def test_single_channel_other_than_zero_is_labelled() -> None:
    # A split recording where only the second channel spoke is still "several channels".
    result = _transcription(Segment(0.0, 1.0, " Only me.", channel=1))
    assert _parse_srt(to_srt(result))[0].content == "[ch 1] Only me."
    assert _parse_vtt(to_vtt(result))[0].voice == "ch 1"
    assert to_txt(result) == "[ch 1] Only me.\n"


def test_srt_survives_hostile_text() -> None:
    result = _transcription(Segment(1.0, 2.0, NASTY_TEXT), Segment(3.0, 4.0, " after"))
    output = to_srt(result)
    subtitles = _parse_srt(output)

    assert len(subtitles) == 2
    assert subtitles[0].content == "a -> b new line <b>bold</b> & co -> end"
    assert subtitles[1].content == "after"
    # The only arrows left are the two timing lines.
    assert output.count("-->") == 2


def test_vtt_survives_hostile_text() -> None:
    result = _transcription(Segment(1.0, 2.0, NASTY_TEXT), Segment(3.0, 4.0, " after"))
    output = to_vtt(result)
    captions = _parse_vtt(output)

    assert len(captions) == 2
    # The reader sees no tags, only escaped text, which unescapes to the original words.
    assert captions[0].raw_text == captions[0].text
    assert html.unescape(captions[0].text) == "a -> b new line <b>bold</b> & co -> end"
    assert "&amp; co" in output
    assert "&lt;b&gt;bold&lt;/b&gt;" in output
    assert captions[1].text == "after"
    assert output.count("-->") == 2


@pytest.mark.parametrize("dashes", ["-->", "--->", "---->", "- ->"])
def test_no_arrow_survives(dashes: str) -> None:
    result = _transcription(Segment(0.0, 1.0, f"x {dashes} y"))
    # One timing line per cue in SRT and WebVTT; none at all in the plain formats.
    assert to_srt(result).count("-->") == 1
    assert to_vtt(result).count("-->") == 1
    assert "-->" not in to_txt(result)
    assert "-->" not in to_tsv(result)


def test_times_over_an_hour() -> None:
    result = _transcription(
        Segment(3725.5, 3727.25, " Late."),
        Segment(36000.0, 36001.001, " Much later."),
        duration_s=36002.0,
    )
    srt_output = to_srt(result)
    vtt_output = to_vtt(result)

    assert "01:02:05,500 --> 01:02:07,250" in srt_output
    assert "10:00:00,000 --> 10:00:01,001" in srt_output
    assert "01:02:05.500 --> 01:02:07.250" in vtt_output
    subtitles = _parse_srt(srt_output)
    assert subtitles[0].start == timedelta(seconds=3725.5)
    assert subtitles[1].end == timedelta(seconds=36001, milliseconds=1)
    captions = _parse_vtt(vtt_output)
    assert captions[0].start_time.in_milliseconds() == 3_725_500
    assert captions[1].end == "10:00:01.001"
    assert to_tsv(result).splitlines()[1] == "3725500\t3727250\t0\tLate."


def test_hundred_hours_do_not_wrap() -> None:
    result = _transcription(Segment(360_000.0, 360_001.0, " Still here."))
    assert "100:00:00,000 --> 100:00:01,000" in to_srt(result)
    assert _parse_vtt(to_vtt(result))[0].start == "100:00:00.000"


def test_negative_start_is_clamped_to_zero() -> None:
    result = _transcription(Segment(-0.02, 0.5, " Early."))
    assert _parse_srt(to_srt(result))[0].start == timedelta(0)
    assert to_json_dict(result, words=False)["segments"][0]["start"] == 0.0


def test_json_round_trip_without_words() -> None:
    result = _transcription(
        Segment(0.0, 1.23456, " Grüße aus Köln.", words=(Word(0.0, 0.5, " Grüße", 0.9),)),
        Segment(1.5, 2.0, " "),
    )
    output = to_json(result)
    data = json.loads(output)

    assert "Grüße" in output  # ensure_ascii=False
    assert output.startswith('{\n  "text"')  # indent=2
    assert data == {
        "text": "Grüße aus Köln.",
        "language": "en",
        "language_probability": 0.98,
        "duration_s": 10.0,
        "model": "tiny.en",
        "segments": [
            {"start": 0.0, "end": 1.235, "text": "Grüße aus Köln.", "channel": 0},
            {"start": 1.5, "end": 2.0, "text": "", "channel": 0},
        ],
    }
    assert data == to_json_dict(result, words=False)


def test_json_round_trip_with_words() -> None:
    words = (
        Word(0.0, 0.4444, " Hello", 0.91),
        Word(0.4444, 0.9, " world", None),
        Word(1.0, 0.99, "!", 0.5),
    )
    result = _transcription(Segment(0.0, 1.0, " Hello world!", channel=1, words=words))
    data = json.loads(to_json(result, words=True))

    assert data["segments"] == [
        {
            "start": 0.0,
            "end": 1.0,
            "text": "Hello world!",
            "channel": 1,
            "words": [
                {"start": 0.0, "end": 0.444, "word": " Hello", "probability": 0.91},
                {"start": 0.444, "end": 0.9, "word": " world", "probability": None},
                {"start": 1.0, "end": 1.0, "word": "!", "probability": 0.5},
            ],
        }
    ]


def test_json_segments_in_time_order() -> None:
    data = to_json_dict(_shuffled_two_party(3), words=False)
    assert [(s["channel"], s["text"]) for s in data["segments"]] == TWO_PARTY_ORDER
    assert all(s["end"] >= s["start"] for s in data["segments"])


def test_txt() -> None:
    assert to_txt(SIMPLE) == "Hello there.\nHow are you?\nFine, thanks.\n"
    result = _transcription(Segment(0.0, 1.0, " two\nlines"))
    assert to_txt(result) == "two lines\n"


def test_txt_multichannel() -> None:
    lines = to_txt(_shuffled_two_party(1)).splitlines()
    assert lines == [f"[ch {ch}] {text}" for ch, text in TWO_PARTY_ORDER]


def test_tsv() -> None:
    result = _transcription(
        Segment(0.0, 2.5, " Hello\tthere."),
        Segment(2.5, 4.0, " How\nare you?", channel=1),
        Segment(4.0, 4.5, ""),
        Segment(5.1235, 7.9874, " Fine."),
    )
    output = to_tsv(result)
    lines = output.splitlines()

    assert output.endswith("\n")
    assert lines[0] == "start\tend\tchannel\ttext"
    assert len(lines) == 1 + 3
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 4 for row in rows)
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows] == [
        (0, 2500, 0),
        (2500, 4000, 1),
        (5124, 7987, 0),
    ]
    assert [r[3] for r in rows] == ["Hello there.", "How are you?", "Fine."]


def test_empty_transcription() -> None:
    result = _transcription(duration_s=0.0)

    assert to_srt(result) == ""
    assert _parse_srt(to_srt(result)) == []
    assert to_vtt(result) == "WEBVTT\n"
    assert _parse_vtt(to_vtt(result)) == []
    data = json.loads(to_json(result, words=True))
    assert data["text"] == ""
    assert data["segments"] == []
    assert to_txt(result) == ""
    assert to_tsv(result) == "start\tend\tchannel\ttext\n"


def test_only_blank_segments_give_no_cues() -> None:
    result = _transcription(Segment(0.0, 1.0, " "), Segment(1.0, 2.0, "\n\n"))
    assert _parse_srt(to_srt(result)) == []
    assert _parse_vtt(to_vtt(result)) == []
    assert json.loads(to_json(result))["text"] == ""
