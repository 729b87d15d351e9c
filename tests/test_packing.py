"""Short clips packed into shared windows (transcriber.packing).

The arithmetic on its own, then the worker's packed run for real: S3 on moto, the database
(SQLite and PostgreSQL), the bundled tiny.en, six notes whose vocabularies share no word
(tests/data/make_packing.sh).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

import transcriber.job_steps
from tests.bench.corpus import terms_vocabulary
from tests.support.speech import jfk_utterances
from transcriber import jobs
from transcriber.audio import SAMPLE_RATE, DecodedAudio, decode
from transcriber.ingest.scan import scan
from transcriber.job_options import TranscribeOptions
from transcriber.job_run import run_job
from transcriber.packing import packed_jobs
from transcriber.packing import plan as packing
from transcriber.results import Segment, Word
from transcriber.schema import AudioObject, Transcript, TranscriptionJob
from transcriber.speech_model import ModelConfig, get_model, transcribe
from transcriber.storage import s3_client

DATA = Path(__file__).parent / "data"
TEXTS = [
    "Seven purple elephants danced quietly.",
    "Copper wires connect every northern tower.",
    "Bright morning sunshine warmed frozen lakes.",
    "Hungry pilots ordered spicy noodles tonight.",
    "Old wooden bridges creak during storms.",
    "Fresh orange juice tastes wonderful.",
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# --- The arithmetic --------------------------------------------------------------------------


def test_plan_fills_windows_first_fit_in_order_with_gaps() -> None:
    windows = packing.plan([5.0, 10.0, 20.0, 4.0, 29.5, 9.0], 30.0)
    layout = [[(p.index, p.offset_s) for p in w.clips] for w in windows]
    assert layout == [
        [(0, 0.0), (1, 6.0), (3, 17.0)],  # 5 s, gap, 10 s, gap, 4 s: 21 s
        [(2, 0.0), (5, 21.0)],  # 20 s did not fit beside them; nor 9 s
        [(4, 0.0)],  # too long to share: alone
    ]
    assert all(w.duration_s <= 30.0 for w in windows)
    assert packing.fits(28.0, 30.0)
    assert not packing.fits(28.1, 30.0)
    assert not packing.fits(0.0, 30.0)


def test_join_puts_each_clip_at_its_offset_with_silence_between() -> None:
    a = np.full(SAMPLE_RATE, 0.5, dtype=np.float32)
    b = np.full(SAMPLE_RATE // 2, -0.25, dtype=np.float32)
    (window,) = packing.plan([1.0, 0.5], 30.0)
    joined = packing.join(window, [a, b])
    assert len(joined) == round(2.5 * SAMPLE_RATE)
    assert np.all(joined[:SAMPLE_RATE] == 0.5)
    assert np.all(joined[SAMPLE_RATE : 2 * SAMPLE_RATE] == 0.0)
    assert np.all(joined[2 * SAMPLE_RATE :] == -0.25)


def _word(start: float, end: float, text: str) -> Word:
    return Word(start=start, end=end, word=text, probability=0.9)


def _whole(*seconds: float) -> list[packing.Speech]:
    """Clips of these lengths, all speech (nothing cut by the VAD)."""
    return [packing.Speech.whole(np.zeros(round(s * SAMPLE_RATE), np.float32)) for s in seconds]


def test_split_cuts_a_segment_that_runs_across_clips_at_its_words() -> None:
    (window,) = packing.plan([3.0, 2.0, 4.0], 30.0)  # offsets 0, 4, 7
    across = Segment(
        start=1.0,
        end=6.5,
        text="alpha beta gamma delta",
        avg_logprob=-0.2,
        words=(
            _word(1.0, 1.5, " alpha"),
            _word(2.6, 3.4, " beta"),  # middle 3.0: inside clip 0
            _word(3.5, 4.2, " gamma"),  # middle 3.85: past half the gap, clip 1
            _word(5.5, 6.5, " delta"),
        ),
    )
    wordless = Segment(start=7.5, end=12.0, text="epsilon zeta eta")  # clip 2's alone
    given = packing.split(window, [across, wordless], _whole(3.0, 2.0, 4.0))
    assert given.rerun == frozenset()
    assert [(s.text, s.start, s.end) for s in given.segments[0]] == [("alpha beta", 1.0, 3.0)]
    assert [(s.text, s.start, s.end) for s in given.segments[1]] == [("gamma delta", 0.0, 2.0)]
    assert [(s.text, s.start, s.end) for s in given.segments[2]] == [("epsilon zeta eta", 0.5, 4.0)]
    # Times are the clip's own, clamped to its length; what the segment carried stays.
    assert [(w.word, w.start, w.end) for w in given.segments[1][0].words] == [
        (" gamma", 0.0, 0.2),
        (" delta", 1.5, 2.0),
    ]
    assert given.segments[0][0].avg_logprob == -0.2


def test_a_clip_a_cut_leaves_short_of_words_runs_again_alone() -> None:
    # One segment over two clips of the same 3 s note: the decoder said it once and a word,
    # the second clip got one word for its 3 s of speech.
    (window,) = packing.plan([3.0, 3.0], 30.0)  # offsets 0, 4
    words = [" pressure", " on", " line", " four", " is", " rising"]
    said = tuple(_word(0.4 * i, 0.4 * i + 0.3, w) for i, w in enumerate(words))
    once = Segment(
        start=0.0,
        end=7.0,
        text="pressure on line four is rising now",
        words=(*said, _word(4.2, 4.5, " now")),
    )
    given = packing.split(window, [once], _whole(3.0, 3.0))
    assert given.rerun == {1}
    # A segment without words over two clips cannot be cut: both run again.
    wordless = Segment(start=0.0, end=7.0, text="pressure on line four")
    assert packing.split(window, [wordless], _whole(3.0, 3.0)).rerun == {0, 1}


def test_a_segment_that_reaches_into_the_next_clip_gives_it_its_words() -> None:
    # The decoder ended a segment 0.25 s into the next clip, and the next clip's first word
    # was in it: it covers one clip only, but is cut at its words all the same.
    (window,) = packing.plan([2.5, 3.0], 30.0)  # offsets 0, 3.5
    segment = Segment(
        start=0.0,
        end=3.75,
        text="fresh orange juice, bright",
        words=(
            _word(0.2, 0.6, " fresh"),
            _word(0.6, 1.1, " orange"),
            _word(1.1, 2.2, " juice,"),
            _word(3.6, 3.8, " bright"),
        ),
    )
    said = ("morning", "sunshine", "warmed", "frozen", "lakes")
    words = tuple(_word(3.8 + 0.5 * i, 4.2 + 0.5 * i, f" {w}") for i, w in enumerate(said))
    rest = Segment(start=3.75, end=6.4, text=" ".join(said), words=words)
    given = packing.split(window, [segment, rest], _whole(2.5, 3.0))
    assert given.rerun == frozenset()
    assert [s.text for s in given.segments[0]] == ["fresh orange juice,"]
    assert [s.text for s in given.segments[1]] == ["bright", " ".join(said)]


def test_a_segment_said_in_a_gap_goes_to_the_nearest_clip() -> None:
    (window,) = packing.plan([2.0, 2.0], 30.0)  # offsets 0, 3
    early = Segment(start=2.1, end=2.4, text="yes", words=(_word(2.1, 2.4, " yes"),))
    late = Segment(start=2.6, end=2.9, text="no", words=(_word(2.6, 2.9, " no"),))
    given = packing.split(window, [early, late], _whole(2.0, 2.0))
    assert given.rerun == frozenset()
    assert [(s.text, s.start, s.end) for s in given.segments[0]] == [("yes", 2.0, 2.0)]
    assert [(s.text, s.start, s.end) for s in given.segments[1]] == [("no", 0.0, 0.0)]
    # Words the alignment gives no time, in a gap: the model said them over the silence
    # laid between the clips (a hotword phrase), and they go to neither.
    filled = Segment(
        start=2.2,
        end=2.8,
        text="P-7 bearing",
        words=(_word(2.2, 2.2, " P-7"), _word(2.2, 2.2, " bearing")),
    )
    given = packing.split(window, [early, filled], _whole(2.0, 2.0))
    assert [s.text for s in given.segments[0]] == ["yes"]
    assert given.segments[1] == []


def test_a_clip_whose_words_leave_an_edge_of_its_speech_unsaid_runs_again_alone() -> None:
    # Three clips whose 4 s of speech the VAD cut (from 0.5 s into each 5 s clip): the
    # first lost its first words (they start 1.1 s late), the second its last ones (they
    # end 1.1 s early); the third is whole.
    vad = [packing.Speech.cut(np.zeros(5 * SAMPLE_RATE, np.float32), [(8_000, 72_000)])] * 3
    (window,) = packing.plan([h.duration_s for h in vad], 30.0)  # offsets 0, 5, 10

    def said(at: float) -> Segment:
        words = tuple(_word(at + 0.5 * i, at + 0.5 * i + 0.4, f" w{i}") for i in range(6))
        return Segment(start=at, end=at + 2.9, text="w", words=words)

    segments = [said(1.1), said(5.0), said(10.5)]
    assert packing.split(window, segments, vad).rerun == {0, 1}
    # Within a second of each edge is the VAD's padding and the alignment's slack.
    segments = [said(1.0), said(5.1), said(10.5)]
    assert packing.split(window, segments, vad).rerun == frozenset()
    # Without the VAD a clip may begin and end with any length of silence.
    segments = [said(1.1), said(5.0), said(10.5)]
    assert packing.split(window, segments, _whole(4.0, 4.0, 4.0)).rerun == frozenset()


def test_a_segment_the_decoder_put_in_one_clip_keeps_its_words_there() -> None:
    # Two clips that sound alike: the decoder's times (start, end) put the segment in clip 1,
    # word alignment slipped its last words into clip 2's stretch.
    (window,) = packing.plan([2.5, 2.5, 2.5], 30.0)  # offsets 0, 3.5, 7
    slipped = Segment(
        start=3.5,
        end=7.0,
        text="copper wires connect every northern tower",
        words=(
            _word(3.5, 3.9, " copper"),
            _word(4.0, 4.4, " wires"),
            _word(4.4, 4.8, " connect"),
            _word(4.9, 5.3, " every"),
            _word(8.8, 9.1, " northern"),
            _word(9.1, 9.4, " tower"),
        ),
    )
    given = packing.split(window, [slipped], _whole(2.5, 2.5, 2.5))
    assert [s.text for s in given.segments[1]] == ["copper wires connect every northern tower"]
    # The clips the decoder skipped have speech and no words: they run again alone.
    assert given.rerun == {0, 2}
    assert given.segments[0] == given.segments[2] == []
    # Its words' times stay inside the clip.
    assert all(0.0 <= w.start <= w.end <= 2.5 for w in given.segments[1][0].words)


def test_clips_where_the_alignment_lost_its_way_run_again_alone() -> None:
    # Six copies of one note decoded as one segment (as on some CPUs): the alignment gave
    # two words of the second clip no time, at the start of the third.
    (window,) = packing.plan([2.5, 2.5, 2.5], 30.0)  # offsets 0, 3.5, 7
    note = [" hopper", " wires", " connect", " every", " northern", " tower"]

    def said(at: float, words: list[str]) -> list[Word]:
        return [_word(at + 0.4 * i, at + 0.4 * i + 0.3, w) for i, w in enumerate(words)]

    words = (
        *said(0.0, note),
        *said(3.5, note[:4]),
        _word(7.1, 7.1, " northern"),  # lost: no time of their own
        _word(7.1, 7.1, " tower"),
        *said(7.2, note),
    )
    once = Segment(start=0.0, end=9.5, text="".join(w.word for w in words), words=words)
    given = packing.split(window, [once], _whole(2.5, 2.5, 2.5))
    # The third clip, and the second, whose last words these may be; not the first.
    assert given.rerun == {1, 2}
    # One lost word is no sign: alignment does that in good transcripts.
    one_lost = (*words[:10], *words[11:])
    again = replace(once, words=one_lost, text="".join(w.word for w in one_lost))
    assert packing.split(window, [again], _whole(2.5, 2.5, 2.5)).rerun == frozenset()


def test_times_go_back_through_what_the_vad_cut() -> None:
    # A clip of 6 s whose speech is 0.5-2.0 s and 4.0-5.0 s: 2.5 s of it goes into the window.
    clip = np.zeros(6 * SAMPLE_RATE, np.float32)
    speech = packing.Speech.cut(clip, [(8_000, 32_000), (64_000, 80_000)])
    assert speech.duration_s == 2.5
    assert speech.clip_s == 6.0
    assert speech.clip_time(0.2) == pytest.approx(0.7)
    assert speech.clip_time(1.7) == pytest.approx(4.2)  # 0.2 s into the second stretch
    # A word that straddles the cut moves with the stretch that holds its middle.
    assert speech.clip_time(1.4, middle_s=1.6) == pytest.approx(3.9)

    other = packing.Speech.whole(np.zeros(SAMPLE_RATE, np.float32))
    (window,) = packing.plan([speech.duration_s, other.duration_s], 30.0)  # offsets 0, 3.5
    segment = Segment(
        start=0.0,
        end=2.5,
        text="open valve",
        words=(_word(0.1, 0.6, " open"), _word(1.6, 2.1, " valve")),
    )
    (local,) = packing.split(window, [segment], [speech, other]).segments[0]
    assert [(w.word, w.start, w.end) for w in local.words] == [
        (" open", 0.6, 1.1),
        (" valve", 4.1, 4.6),
    ]
    assert (local.start, local.end) == (0.6, 4.6)


# --- The worker's packed run --------------------------------------------------------------------


Published = list[int]


def _flac(samples: np.ndarray[Any, Any]) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, SAMPLE_RATE, format="FLAC")
    return out.getvalue()


def _long_clip() -> bytes:
    """35 s: small enough to be claimed, too long to share a window."""
    speech, _ = soundfile.read(DATA / "packing_1.flac", dtype="float32")
    samples = np.zeros(35 * SAMPLE_RATE, dtype=np.float32)
    samples[: len(speech)] = speech
    samples[-len(speech) :] = speech
    return _flac(samples)


def _queue(engine: Engine, settings: Any, objects: dict[str, bytes]) -> dict[str, int]:
    """Upload ``objects`` and register them; their job ids by key, in queue order."""
    s3 = s3_client(settings)
    for key, body in objects.items():
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    scan(s3, engine, settings, lambda ids: None)
    with Session(engine) as session:
        rows = session.execute(
            select(AudioObject.key, TranscriptionJob.id)
            .join(TranscriptionJob, TranscriptionJob.audio_object_id == AudioObject.id)
            .order_by(TranscriptionJob.id)
        )
        return {row.key: row.id for row in rows}


@pytest.fixture
def packing_bucket(moto_bucket: Any) -> Any:
    """The settings of a fresh bucket, with packing on (30 s windows)."""
    return moto_bucket.model_copy(update={"pack_max_seconds": 30.0})


def _notes() -> dict[str, bytes]:
    return {f"notes/{n}.flac": (DATA / f"packing_{n}.flac").read_bytes() for n in range(1, 7)}


def _job(engine: Engine, job_id: int) -> TranscriptionJob:
    with Session(engine) as session:
        job = session.get_one(TranscriptionJob, job_id)
        session.expunge(job)
        return job


def _transcript(engine: Engine, job_id: int) -> Transcript:
    with Session(engine) as session:
        transcript = session.scalars(select(Transcript).where(Transcript.job_id == job_id)).one()
        for segment in transcript.segments:
            _ = list(segment.words)
        session.expunge_all()
        return transcript


def _run(engine: Engine, settings: Any, job_id: int, published: Published | None = None) -> str:
    publish: Callable[[Sequence[int]], None] = (published if published is not None else []).extend
    return run_job(job_id, settings, engine=engine, publish=publish)


@pytest.mark.parametrize(
    ("window_s", "windows"), [(30.0, [range(6)]), (10.0, [range(3), range(3, 6)])]
)
def test_each_packed_clip_gets_only_its_own_words_at_times_inside_it(
    db: Engine, moto_bucket: Any, window_s: float, windows: list[range]
) -> None:
    settings = moto_bucket.model_copy(update={"pack_max_seconds": window_s})
    objects = {
        **_notes(),
        "notes/7-broken.wav": b"RIFF\x10\x00\x00\x00WAVEfmt garbage",
        "notes/8-long.flac": _long_clip(),
    }
    ids = _queue(db, settings, objects)
    published: Published = []
    assert _run(db, settings, ids["notes/1.flac"], published) == "succeeded"

    notes = [f"notes/{n}.flac" for n in range(1, 7)]
    vocabularies = [_words(text) for text in TEXTS]
    for index, key in enumerate(notes):
        job = _job(db, ids[key])
        assert (job.status, job.attempts) == ("succeeded", 1), key
        # Six notes of about 2.5 s: one window of 30 s holds them all, one of 10 s three.
        (window,) = [w for w in windows if index in w]
        assert job.options["packed"]["jobs"] == [ids[notes[i]] for i in window]
        transcript = _transcript(db, ids[key])
        said = _words(transcript.text)
        others = set().union(*(v for i, v in enumerate(vocabularies) if i != index))
        assert not said & others, f"{key} got words of another clip: {said & others}"
        assert len(said & vocabularies[index]) >= 3, f"{key}: {transcript.text!r}"
        assert transcript.segments
        for segment in transcript.segments:
            assert 0.0 <= segment.start_s <= segment.end_s <= transcript.duration_s + 1e-6
            for word in segment.words:
                assert segment.start_s - 1e-6 <= word.start_s <= word.end_s
                assert word.end_s <= segment.end_s + 1e-6

    broken = _job(db, ids["notes/7-broken.wav"])
    assert (broken.status, broken.error_category, broken.attempts) == ("failed", "corrupt", 1)
    # The long one was claimed, found too long and handed back: queued, its attempt not
    # counted, its length known so that no packed run claims it again, published again.
    long = _job(db, ids["notes/8-long.flac"])
    assert (long.status, long.attempts, long.lease_owner) == ("queued", 0, None)
    assert published == [ids["notes/8-long.flac"]]
    with Session(db) as session:
        seconds = session.scalar(
            select(AudioObject.duration_s).where(AudioObject.key == "notes/8-long.flac")
        )
    assert seconds == pytest.approx(35.0)
    assert jobs.claim(db, "someone", 10, max_bytes=1 << 30, max_seconds=28.0) == []
    assert _run(db, settings, ids["notes/8-long.flac"]) == "succeeded"
    assert "packed" not in _job(db, ids["notes/8-long.flac"]).options


def test_packing_off_runs_one_job_per_task(db: Engine, moto_bucket: Any) -> None:
    settings = moto_bucket.model_copy(update={"pack_max_seconds": 0.0})
    ids = _queue(db, settings, _notes())
    first, *rest = ids.values()
    assert _run(db, settings, first) == "succeeded"
    assert "packed" not in _job(db, first).options
    assert {_job(db, job_id).status for job_id in rest} == {"queued"}


@pytest.mark.parametrize("vocabulary", ["none", "facility"])
def test_no_word_moves_between_real_and_synthetic_clips_packed_together(
    db: Engine,
    packing_bucket: Any,
    jfk_recording: Path,
    vocabulary: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two real utterances of JFK's sentence, cut at its pauses, and the six notes, packed in
    # one window with a real clip beside a real one and beside synthetic ones; no two share
    # a word. Once as audio at no facility, once with the demo facility's vocabulary as
    # hotwords (the decoder then runs segments across the gaps and fills them).
    hotwords = terms_vocabulary() if vocabulary == "facility" else None

    def options(session: Session, audio_id: int, settings: Any) -> TranscribeOptions:
        return TranscribeOptions.from_settings(settings, hotwords=hotwords)

    monkeypatch.setattr(transcriber.job_steps, "options_for_audio", options)
    jfk = decode(jfk_recording, max_bytes=1 << 30, max_seconds=60).channels[0]
    first, second, _ = jfk_utterances(jfk, SAMPLE_RATE)
    notes = _notes()
    # In this order, faster-whisper ran "... tastes wonderful, bright" as one segment that
    # ended 0.25 s into the next clip, and "bright" went to the clip before it (on two
    # cores of a Xeon; another CPU's arithmetic may segment otherwise, and the unit test
    # test_a_segment_that_reaches_into_the_next_clip_gives_it_its_words holds the rule).
    order = [("note", 2), ("note", 6), ("note", 3), ("note", 5), ("note", 4)]
    order += [("jfk", 0), ("jfk", 1), ("note", 1)]
    objects: dict[str, bytes] = {}
    texts: list[str] = []
    for position, (kind, n) in enumerate(order):
        if kind == "note":
            objects[f"clips/{position}-note.flac"] = notes[f"notes/{n}.flac"]
            texts.append(TEXTS[n - 1])
        else:
            samples, text = (first, second)[n]
            objects[f"clips/{position}-jfk.flac"] = _flac(samples)
            texts.append(text)
    ids = _queue(db, packing_bucket, objects)
    assert _run(db, packing_bucket, ids["clips/0-note.flac"]) == "succeeded"

    keys = sorted(objects)
    vocabularies = [_words(text) for text in texts]
    packed_with = {key: _job(db, ids[key]).options.get("packed", {}).get("jobs") for key in keys}
    assert packed_with["clips/0-note.flac"] is not None, "the clips were not packed"
    # What each clip says run alone, with the same options: tiny.en hears "danced" in the
    # first note as "and", a word of JFK's; that is the note's own mistake, not a move.
    loaded = get_model(ModelConfig.from_settings(packing_bucket))
    same = TranscribeOptions.from_settings(packing_bucket, hotwords=hotwords)
    alone = [
        _words(
            " ".join(s.text for s in transcribe(decode_bytes(objects[k]), same, loaded).segments)
        )
        for k in keys
    ]
    for index, key in enumerate(keys):
        said = _words(_transcript(db, ids[key]).text)
        others = set().union(*(v for i, v in enumerate(vocabularies) if i != index))
        moved = (said & others) - alone[index]
        assert not moved, f"{key} got words of another clip: {moved} ({said})"
        # And its own: the first and last words of the real utterances included.
        assert len(said & vocabularies[index]) >= 3, f"{key}: {said}"
    for key, edge_words in (
        ("clips/5-jfk.flac", {"and", "americans"}),
        ("clips/6-jfk.flac", {"ask", "you"}),
    ):
        said = _words(_transcript(db, ids[key]).text)
        assert edge_words <= said, f"{key} lost a word at its edge: {said}"


def decode_bytes(data: bytes) -> DecodedAudio:
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == SAMPLE_RATE
    return DecodedAudio((samples,), rate, 1, "flac", "flac")


def test_only_clips_with_the_same_options_share_a_window(
    db: Engine, packing_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def options_by_parity(session: Session, audio_id: int, settings: Any) -> TranscribeOptions:
        return TranscribeOptions.from_settings(settings, hotwords=f"parity {audio_id % 2}")

    monkeypatch.setattr(transcriber.job_steps, "options_for_audio", options_by_parity)
    ids = _queue(db, packing_bucket, _notes())
    assert _run(db, packing_bucket, next(iter(ids.values()))) == "succeeded"
    audio_of = {j: _job(db, j).audio_object_id for j in ids.values()}
    windows = {tuple(_job(db, j).options["packed"]["jobs"]) for j in ids.values()}
    assert len(windows) == 2
    for window in windows:
        assert len({audio_of[j] % 2 for j in window}) == 1


def test_a_window_that_fails_runs_its_clips_one_by_one(
    db: Engine, packing_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the window broke")

    monkeypatch.setattr(packed_jobs, "run_windows", broken)
    ids = _queue(db, packing_bucket, _notes())
    assert _run(db, packing_bucket, next(iter(ids.values()))) == "succeeded"
    for job_id in ids.values():
        job = _job(db, job_id)
        assert (job.status, job.attempts) == ("succeeded", 1)
        assert "packed" not in job.options
        assert _transcript(db, job_id).text


class _Died(BaseException):
    """What the worker process dying mid-window looks like from inside: nothing after it
    runs, nothing is recorded."""


def test_a_crash_mid_window_runs_every_clip_of_it_again_once_alone(
    db: Engine, packing_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies(*args: object, **kwargs: object) -> None:
        raise _Died

    ids = _queue(db, packing_bucket, _notes())
    with monkeypatch.context() as patch:
        patch.setattr(packed_jobs, "run_windows", dies)
        with pytest.raises(_Died):
            _run(db, packing_bucket, next(iter(ids.values())))
    assert {_job(db, j).status for j in ids.values()} == {"running"}
    # Their leases run out (the process is gone); the sweeper publishes them again.
    with db.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(update(TranscriptionJob).values(lease_expires_at=past))
    swept: Published = []
    jobs.sweep(db, packing_bucket, swept.extend)
    assert sorted(swept) == sorted(ids.values())
    for job_id in swept:
        assert _run(db, packing_bucket, job_id) == "succeeded"
    for job_id in ids.values():
        job = _job(db, job_id)
        assert (job.status, job.attempts) == ("succeeded", 2)
        assert "packed" not in job.options  # a second attempt runs alone


def test_a_claimed_clip_left_alone_in_a_window_goes_back_to_the_queue(
    db: Engine, moto_bucket: Any
) -> None:
    settings = moto_bucket.model_copy(update={"pack_max_seconds": 10.0})
    notes = dict(list(_notes().items())[:4])  # 3 fit one window of 10 s; the 4th would be alone
    ids = list(_queue(db, settings, notes).values())
    published: Published = []
    assert _run(db, settings, ids[0], published) == "succeeded"
    assert [_job(db, j).status for j in ids[:3]] == ["succeeded"] * 3
    last = _job(db, ids[3])
    assert (last.status, last.attempts, last.lease_owner) == ("queued", 0, None)
    assert published == [ids[3]]


def test_identical_clips_in_one_window_each_keep_their_words(
    db: Engine, packing_bucket: Any
) -> None:
    # One call recorded by six sensors: the window's text says the same thing six times,
    # which faster-whisper's repetition check, applied to the whole window, takes for a loop.
    body = (DATA / "packing_2.flac").read_bytes()
    ids = list(_queue(db, packing_bucket, {f"alarm/{n}.flac": body for n in range(6)}).values())
    assert _run(db, packing_bucket, ids[0]) == "succeeded"
    jobs = [_job(db, job_id) for job_id in ids]
    assert {job.status for job in jobs} == {"succeeded"}
    # They shared a window; those whose words came back in doubt ran again alone (how many
    # depends on the CPU: none on one machine, four of six on another).
    assert {tuple(job.options["packed"]["jobs"]) for job in jobs if "packed" in job.options} == {
        tuple(ids)
    }
    for job_id in ids:
        text = _transcript(db, job_id).text
        assert len(_words(text) & _words(TEXTS[1])) >= 3, f"job {job_id}: {text!r}"
        # Its own words, not a neighbour's too.
        assert len(text.split()) <= len(TEXTS[1].split()) + 1, f"job {job_id}: {text!r}"
