"""Words the model adds once the speech has ended: where they come from, and how to tell them.

Given a prompt (the facility's vocabulary as hotwords), tiny.en keeps talking once the
speech is over. With word timestamps, faster-whisper ends a window at its last word unless
the decoder closed it with a single timestamp, and decodes what is left as a window of its
own; at the end of the audio what is left is the VAD's padding after the last speech (0.4 s),
and with a prompt the model fills it with "Thank you.", "laser.", a hotword phrase ("P-7
bearing temperature,") or a loop of one word, which it then decodes again at rising
temperatures. Without a prompt the decoder closes the window itself and none of this happens.
On two CPU cores that remainder took three quarters of the decoding time of a short note.

Two measures, both measured against bare faster-whisper (docs/benchmarks.md, "Accuracy on
real and synthetic speech"):

- **At the cause**, :func:`whisper_model` ends the last window of the audio when no more
  than the VAD's padding is left after the decoder's last timestamp: nothing was heard
  there. (A real last word that the decoder left for a window of its own, "next man" at the
  end of a LibriSpeech recording, came 0.7 s and more after it, and is still decoded.)
- **After the fact**, :func:`drop_trailing` drops what the model still said after the
  speech: segments at the end of a transcript whose words have no place in the audio (the
  word alignment, a dynamic time warping of the decoder's attention over the audio, gives
  them no time, or the model gives them a low probability; Whisper's reference
  implementation scores words the same way to skip hallucinations in silences), or that the
  model rated as probably not speech. Only segments that *follow* the speech: a doubtful
  segment before or between confident ones is still the model's best reading of real speech
  (an espeak-ng note decoded as "PT-" scores as doubtful, and it is all the note has).
  Packed clips get the same, clip by clip.
"""

from __future__ import annotations

import string
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any

from transcriber.results import Segment, Word

# A word is doubtful when the model gives it a probability under this ...
DOUBTFUL_PROBABILITY = 0.15
# ... when the alignment gives it less time than any spoken word takes (two 20 ms frames
# and a bit; doubt grows as the time shrinks to nothing) ...
SHORTEST_WORD_S = 0.133
# ... or when it spreads over more than this (a word stretched over a silence).
LONGEST_WORD_S = 2.0
# The first this many words of a segment are scored: a hallucination shows from its start.
SCORED_WORDS = 8
# A segment is doubtful when its words score this much in all, or as much as one for each
# word (every word doubtful).
DOUBTFUL_SEGMENT = 3.0
# Whisper's own threshold: past this the model rates a window as probably not speech. A
# trailing segment of such a window with a doubtful word is dropped too ("Thank you." after
# the last third of JFK's sentence cut out on its own: no-speech 0.83, "Thank" at 0.04).
NO_SPEECH_THRESHOLD = 0.6
# What faster-whisper's VAD keeps after the last speech (VadOptions.speech_pad_ms): a
# remainder of the audio no longer than this after the decoder's last timestamp holds no
# speech, and is not decoded.
SPEECH_PAD_S = 0.4  # tests/test_hallucinations.py checks it against faster-whisper's

_PUNCTUATION = frozenset(string.punctuation) | frozenset("¿¡«»“”‘’…")


def word_doubt(word: Word) -> float:
    """How out of place ``word`` is in the audio: 0 for a word the model is sure of and
    that takes a speaker's time, about 1 per sign of doubt."""
    seconds = word.end - word.start
    # A word without a probability (a transcript loaded back without one) is not doubted
    # for it.
    probability = 1.0 if word.probability is None else word.probability
    doubt = 1.0 if probability < DOUBTFUL_PROBABILITY else 0.0
    if seconds < SHORTEST_WORD_S:
        doubt += (SHORTEST_WORD_S - seconds) * 15  # 2.0 for a word given no time at all
    if seconds > LONGEST_WORD_S:
        doubt += seconds - LONGEST_WORD_S
    return doubt


def doubtful(segment: Segment) -> bool:
    """Whether ``segment`` looks like something the model said over no speech (always False
    for a segment without word timings: there is nothing to judge by)."""
    words = [w for w in segment.words if not set(w.word.strip()) <= _PUNCTUATION][:SCORED_WORDS]
    if not words:
        return False
    doubts = [word_doubt(w) for w in words]
    doubt = sum(doubts)
    if doubt >= DOUBTFUL_SEGMENT or doubt + 0.01 >= len(words):
        return True
    no_speech = segment.no_speech_prob or 0.0
    return no_speech > NO_SPEECH_THRESHOLD and max(doubts) >= 1.0


def drop_trailing(segments: Sequence[Segment]) -> list[Segment]:
    """``segments`` (one track, in time order) without the doubtful ones at their end that
    follow a segment that stays: what the model went on to say after the speech."""
    kept = list(segments)
    while len(kept) > 1 and doubtful(kept[-1]):
        kept.pop()
    return kept


@cache
def whisper_model() -> type[Any]:
    """faster-whisper's ``WhisperModel``, made not to decode the padding after the speech
    (see the module). Built on first use: importing faster-whisper is heavy.

    It overrides a private method, ``_split_segments_by_timestamps`` (faster-whisper 1.1 and
    1.2; tests/test_faster_whisper_contract.py fails with a clear message when it changes), the one
    place that decides where the next window starts. The batched pipeline (on a GPU) ignores
    what it returns, so there only :func:`drop_trailing` applies. With the VAD off
    (``TRANSCRIBER_VAD_FILTER=false``) the remainder is not padding but the audio's own end:
    a word the decoder left out of its window in the last 0.4 s of a file is not decoded.
    """
    from faster_whisper import WhisperModel

    class SpeechEndWhisperModel(WhisperModel):  # type: ignore[misc]
        # Whether the last decoding of this thread stopped on its own (the model's end of
        # text) rather than at the length limit; per thread, as transcriber.packing.lockstep runs
        # several windows through one model in threads of their own.
        _decoded = threading.local()

        def generate_with_fallback(
            self, encoder_output: Any, prompt: list[int], tokenizer: Any, options: Any
        ) -> Any:
            result = super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
            limit = self.max_length
            if options.max_new_tokens is not None:
                limit = min(limit, len(prompt) + options.max_new_tokens)
            tokens = result[0].sequences_ids[0]
            self._decoded.ended = len(prompt) + len(tokens) < limit - 1
            return result

        def _split_segments_by_timestamps(
            self,
            tokenizer: Any,
            tokens: list[int],
            time_offset: float,
            segment_size: int,
            segment_duration: float,
            seek: int,
        ) -> tuple[list[dict[str, Any]], int, bool]:
            segments, next_seek, single_ending = super()._split_segments_by_timestamps(
                tokenizer, tokens, time_offset, segment_size, segment_duration, seek
            )
            end = seek + segment_size
            left = end - next_seek
            # Only in a window shorter than 30 s (the last of the audio with the VAD's
            # speech laid end to end, or of a packed window) whose decoding the model ended
            # itself (output cut short at the length limit keeps faster-whisper's rule), and
            # where the decoder either gave no closing pair of timestamps at all (the rest
            # would be decoded from the last word's end) or closed its text with one that
            # leaves no more than the VAD's padding (words after it are decoded again).
            ended = getattr(self._decoded, "ended", False)
            last = segment_size < self.feature_extractor.nb_max_frames
            closed = bool(tokens) and tokens[-1] >= tokenizer.timestamp_begin
            padding = left == 0 or (closed and left <= self._pad_frames)
            if segments and ended and last and not single_ending and padding:
                return segments, end, True
            return segments, next_seek, single_ending

        @property
        def _pad_frames(self) -> float:
            return SPEECH_PAD_S * float(self.frames_per_second)

    return SpeechEndWhisperModel
