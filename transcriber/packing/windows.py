"""Packed windows through the speech model: what of a clip the model hears, and the decoding
of several windows at once, each segment with the decoder's own times.

Carved out of the speech model (:mod:`transcriber.speech_model`) so that what only packing
needs lives with packing: the VAD's cut of each clip, the options a window runs with, and the
timestamps read off the decoder's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from transcriber.audio import Samples
from transcriber.job_options import TranscribeOptions
from transcriber.packing.lockstep import transcribe_side_by_side
from transcriber.packing.plan import Speech
from transcriber.results import Segment
from transcriber.speech_model import LoadedModel, spoken_segments, to_segment


def speech(samples: Samples, options: TranscribeOptions) -> Speech:
    """What of ``samples`` the model hears: with the VAD on, the stretches in which Silero
    finds speech, by faster-whisper's own defaults, as ``transcribe`` would cut them."""
    if not options.vad_filter:
        return Speech.whole(samples)
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    chunks = get_speech_timestamps(samples, VadOptions())
    return Speech.cut(samples, [(c["start"], c["end"]) for c in chunks])


def run_windows(
    loaded: LoadedModel, windows: Sequence[Samples], options: TranscribeOptions
) -> list[tuple[list[Segment], Any] | Exception]:
    """The speech segments in each of several packed windows (clips laid end to end, their
    VAD already applied: ``options.vad_filter`` is not), each segment's ``start`` and
    ``end`` the decoder's own times (see :func:`transcriber.packing.plan.split`), with
    faster-whisper's info; or the exception that window's run raised.

    The windows go through faster-whisper's sequential loop, which makes a second pass
    over what a first one stopped short of (the batched pipeline decodes each window once
    and kept whole clips out of packed windows: WER 0.160 against 0.083 on the same
    windows). On the CPU they go side by side, their decoding batched
    (:mod:`transcriber.packing.lockstep`); on a GPU, where that batching is not yet measured, one
    after another.
    """
    kwargs = options.model_kwargs() | {
        # The repetition check is left to the caller, clip by clip
        # (:func:`transcriber.speech_model.repetitive`): faster-whisper measures the
        # compression ratio of a whole window's text, and clips that say the same thing (one
        # alarm call recorded by five sensors) would read as a repetition loop, be decoded
        # again at random temperatures and then dropped.
        "compression_ratio_threshold": None,
        # A second pass over the part of a window that the first one stopped short of is not
        # given the first pass's text as its prompt: that text is other clips' words, no
        # context for the clip ahead; without it every second pass has the same prompt, and
        # the second passes of all windows are decoded as one batch (packing.lockstep; 64
        # notes: 9.2 s against 10.8 s, WER 0.083 against 0.079, both below the 0.101 of the
        # notes run alone).
        "condition_on_previous_text": False,
    }
    if loaded.device != "cpu" or len(windows) < 2:
        results: list[tuple[list[Any], Any] | Exception] = []
        for samples in windows:
            try:
                generator, info = loaded.whisper.transcribe(samples, **kwargs)
                results.append((list(generator), info))
            except Exception as exc:
                results.append(exc)
    else:
        results = transcribe_side_by_side(loaded.whisper, windows, kwargs)
    decoded = partial(to_segment, decoder_times=_DecoderTimes(loaded.whisper))
    return [
        result
        if isinstance(result, Exception)
        else (spoken_segments([decoded(s) for s in result[0]], check_repetition=False), result[1])
        for result in results
    ]


class _DecoderTimes:
    """A segment's start and end as the decoder gave them, from its timestamp tokens
    (faster-whisper moves them to the first and last word's times when it aligns words)."""

    def __init__(self, whisper: Any) -> None:
        self._first = whisper.hf_tokenizer.token_to_id("<|notimestamps|>") + 1
        self._precision = float(whisper.time_precision)
        self._frame = float(whisper.feature_extractor.time_per_frame)

    def __call__(self, raw: Any) -> tuple[float, float]:
        stamps = [t for t in raw.tokens if t >= self._first]
        if len(stamps) < 2:  # not expected of a timestamped decoding; the aligned times then
            return float(raw.start), float(raw.end)
        offset = raw.seek * self._frame
        first, last = (
            (t - self._first) * self._precision + offset for t in (stamps[0], stamps[-1])
        )
        return round(first, 3), round(last, 3)
