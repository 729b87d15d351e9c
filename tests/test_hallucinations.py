"""What the model says after the speech (transcriber.hallucinations), on segments shaped like
the ones tiny.en produced with a facility's hotwords (docs/benchmarks.md, accuracy)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from transcriber.hallucinations import (
    SPEECH_PAD_S,
    doubtful,
    drop_trailing,
    whisper_model,
    word_doubt,
)
from transcriber.results import Segment, Word


def _segment(*words: tuple[str, float, float, float]) -> Segment:
    said = tuple(Word(start=s, end=e, word=w, probability=p) for w, s, e, p in words)
    return Segment(
        start=said[0].start if said else 0.0,
        end=said[-1].end if said else 0.0,
        text="".join(w.word for w in said).strip(),
        words=said,
    )


SPEECH = _segment(
    (" ask", 8.06, 8.66, 0.99),
    (" what", 8.66, 8.94, 1.0),
    (" you", 8.94, 9.28, 0.99),
    (" can", 9.28, 9.5, 1.0),
    (" do", 9.5, 9.72, 1.0),
    (" for", 9.72, 9.92, 1.0),
    (" your", 9.92, 10.24, 0.99),
    (" country.", 10.24, 10.5, 1.0),
)
# JFK with the facility's hotwords: twice, over the last half second of the file.
THANK_YOU = _segment((" Thank", 10.52, 10.52, 0.01), (" you.", 10.52, 10.72, 0.98))
# One improbable word of ordinary length ("laser.", p 0.01).
LASER = _segment((" laser.", 5.22, 5.46, 0.01))
# A hotword phrase whose words the alignment gave no time at all.
PHRASE = _segment(
    (" P", 5.94, 5.94, 0.0),
    ("-7", 5.94, 6.04, 0.0),
    (" bearing", 6.04, 6.04, 0.0),
    (" temperature,", 6.04, 6.04, 0.0),
)


def test_a_word_is_doubtful_for_low_probability_no_time_or_too_much_time() -> None:
    assert word_doubt(Word(start=1.0, end=1.3, word=" pump", probability=0.9)) == 0.0
    assert word_doubt(Word(start=1.0, end=1.3, word=" pump", probability=0.1)) == 1.0
    assert word_doubt(Word(start=1.0, end=1.0, word=" pump", probability=0.9)) == 1.995
    assert word_doubt(Word(start=1.0, end=3.5, word=" pump", probability=0.9)) == 0.5


def test_segments_whose_words_have_no_place_in_the_audio_are_doubtful() -> None:
    assert not doubtful(SPEECH)
    assert doubtful(THANK_YOU)
    assert doubtful(LASER)
    assert doubtful(PHRASE)
    # Two quick, confident words are speech ("is there?" after a note kept its place).
    assert not doubtful(_segment((" is", 3.54, 3.72, 0.6), (" there?", 3.72, 3.82, 0.48)))
    # Punctuation is not scored; with nothing else there is nothing to judge by.
    assert not doubtful(_segment((" ...", 1.0, 1.0, 0.0)))
    assert not doubtful(Segment(start=0.0, end=2.0, text="no word timings"))


def test_only_doubtful_segments_after_the_speech_are_dropped() -> None:
    assert drop_trailing([SPEECH, THANK_YOU, THANK_YOU]) == [SPEECH]
    assert drop_trailing([SPEECH, LASER, PHRASE]) == [SPEECH]
    # One in the middle is the model's reading of real speech, and stays.
    assert drop_trailing([SPEECH, LASER, SPEECH]) == [SPEECH, LASER, SPEECH]
    # The only segment stays however doubtful: it is all the model heard.
    assert drop_trailing([LASER]) == [LASER]
    assert drop_trailing([]) == []


# --- The model that does not decode the padding after the speech ---------------------------


def _bare_model() -> Any:
    """The service's WhisperModel subclass, without weights: what its window arithmetic
    reads (faster-whisper's values for every Whisper model)."""
    cls = whisper_model()
    model: Any = object.__new__(cls)
    model.time_precision = 0.02
    model.input_stride = 2
    model.frames_per_second = 100
    model.feature_extractor = SimpleNamespace(nb_max_frames=3000)
    return model


_BEGIN = 50_000  # the first timestamp token of this stand-in tokenizer


def _stamp(seconds: float) -> int:
    return _BEGIN + round(seconds / 0.02)


def _next_seek(
    model: Any, tokens: list[int], window_frames: int, seek: int = 0, ended: bool = True
) -> tuple[int, bool]:
    model._decoded.ended = ended  # what generate_with_fallback records of the decoding
    _, after, single = model._split_segments_by_timestamps(
        SimpleNamespace(timestamp_begin=_BEGIN),
        tokens,
        seek / 100,
        window_frames,
        window_frames / 100,
        seek,
    )
    return after, single


def test_the_last_window_ends_where_only_the_speech_padding_is_left() -> None:
    model = _bare_model()
    # A 3.5 s note whose decoder closed its text with two timestamps at 3.2 s: 0.3 s left,
    # the VAD's padding: not decoded.
    said = [_stamp(0.0), 11, 12, 13, _stamp(3.2), _stamp(3.2)]
    assert _next_seek(model, said, 350) == (350, True)
    # 1.0 s left: real speech may be there ("next man"), and it is decoded.
    said = [_stamp(0.0), 11, 12, 13, _stamp(2.5), _stamp(2.5)]
    assert _next_seek(model, said, 350) == (250, False)
    # Not the last window of the audio (30 s of it): faster-whisper's own rule.
    said = [_stamp(0.0), 11, 12, 13, _stamp(29.7), _stamp(29.7)]
    assert _next_seek(model, said, 3000) == (2970, False)
    # The last window of a longer file: 30 s in, 3.5 s long, 0.3 s left after its text.
    said = [_stamp(0.0), 11, 12, 13, _stamp(3.2), _stamp(3.2)]
    assert _next_seek(model, said, 350, seek=3000) == (3350, True)
    # No closing pair at all (how tiny.en mostly ends a note given hotwords): faster-whisper
    # would decode again from the last word's end; the model said it was done.
    assert _next_seek(model, [_stamp(0.0), 11, 12, 13], 350) == (350, True)
    # The same cut short at the length limit (a long prompt leaves few tokens), and words
    # after the last pair of timestamps: faster-whisper decodes the rest, and so does the
    # service.
    assert _next_seek(model, [_stamp(0.0), 11, 12, 13], 350, ended=False) == (350, False)
    said = [_stamp(0.0), 11, 12, _stamp(3.2), _stamp(3.2), 13, 14]
    assert _next_seek(model, said, 350) == (320, False)
    # Closed by a single timestamp: done already, as faster-whisper has it.
    assert _next_seek(model, [_stamp(0.0), 11, 12, 13, _stamp(3.2)], 350) == (350, True)


def test_the_padding_is_the_vads() -> None:
    from faster_whisper.vad import VadOptions

    assert VadOptions().speech_pad_ms / 1000 == SPEECH_PAD_S


# That faster-whisper still has _split_segments_by_timestamps with these parameters, and the
# other private parts the service relies on: tests/test_faster_whisper_contract.py.
