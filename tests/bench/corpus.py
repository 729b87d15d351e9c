"""Audio corpora for the service benchmarks, made at run time from the committed speech files.

Nothing here is committed audio: each clip is the three test sentences (tests/data/README.md),
read with soundfile, composed with pydub (cut, set to a loudness, laid end to end with pauses,
plant noise mixed in at a set level), resampled with numpy and encoded with soundfile (WAV,
FLAC, Ogg Vorbis) or the ffmpeg command line (MP3, AAC in M4A). A seed makes a corpus the same
on every run, so two runs (or bare faster-whisper and the service in one run) get the very same
bytes.

pydub is only a test and benchmark tool here (the ``dev`` extra): the service decodes
untrusted audio with PyAV (transcriber/audio.py says why).
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile
from pydub import AudioSegment

# Not imported from tests.support.service: the bare faster-whisper process of the overhead
# benchmark imports this module, and must not carry the service's libraries (see there).
DATA = Path(__file__).parents[1] / "data"
RATE = 16_000
Audio = npt.NDArray[np.float32]
# The sentences are composed as 16-bit PCM, what the committed files hold.
_FULL_SCALE = 32768
# Plant noise under every voice note: Gaussian, its RMS 0.002 of full scale (-54 dBFS).
NOISE_RMS = 0.002

# (extension, how to encode): soundfile's container and subtype, or ffmpeg's codec arguments.
_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}
_FFMPEG = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-f", "ipod"],
}
MIXED_FORMATS = ("wav", "flac", "mp3", "ogg", "m4a")
# Rates that recorders, phones and radios produce; 16 kHz is what the model takes, so every
# other one makes both pipelines resample.
MIXED_RATES = (16_000, 44_100, 48_000, 8_000, 22_050, 32_000)


@dataclass(frozen=True)
class Clip:
    """One file of a corpus: the object key to upload it as, its bytes and what it is."""

    key: str
    data: bytes
    seconds: float
    ext: str
    rate: int
    channels: int

    def write(self, directory: Path) -> Path:
        path = directory / self.key.replace("/", "_")
        path.write_bytes(self.data)
        return path


def _pcm(samples: npt.NDArray[np.int16], channels: int = 1) -> Any:
    """16-bit samples at 16 kHz (frames by channels) as a pydub ``AudioSegment``."""
    data = np.ascontiguousarray(samples).tobytes()
    return AudioSegment(data, sample_width=2, frame_rate=RATE, channels=channels)


def _frames(segment: Any) -> int:
    return int(segment.frame_count())


def _silence(frames: int) -> Any:
    # Not AudioSegment.silent: it takes milliseconds, and rounds some lengths a sample short.
    return _pcm(np.zeros(frames, np.int16))


def _gain_db(factor: float) -> float:
    """A loudness drawn as a factor of amplitude (0.4-1.0) as pydub's gain (-8 to 0 dB)."""
    return 20 * float(np.log10(factor))


def _float32(segment: Any) -> Audio:
    samples = np.frombuffer(segment.raw_data, dtype=np.int16)
    audio: Audio = samples.astype(np.float32) / np.float32(_FULL_SCALE)
    return audio


@cache
def sentences() -> tuple[Any, ...]:
    """Sentences A, B and C (tests/data/README.md) as 16 kHz mono 16-bit ``AudioSegment``s.
    C is the right channel of the two-party recording from where B's turn on the left has
    ended."""
    a, _ = soundfile.read(DATA / "speech_16k_mono.wav", dtype="int16")
    b, _ = soundfile.read(DATA / "speech_16k_mono.ogg", dtype="int16")
    two, _ = soundfile.read(DATA / "two_party_stereo.wav", dtype="int16")
    right = _pcm(two, channels=2).split_to_mono()[1]
    return (_pcm(a), _pcm(b), right.get_sample_slice(int(4.5 * RATE)))


def _speech(rng: np.random.Generator, seconds: float) -> Audio:
    """``seconds`` of a voice note: each sentence at most once, in random order and loudness,
    with pauses between, over faint noise (digital silence is rarer in real recordings than
    in test files). What does not fit is cut off at the end.

    A sentence is never said twice in one clip: Whisper takes a transcript that repeats
    itself for a decoding loop (its text compresses too well) and decodes the window again
    with sampling, which makes the work random from run to run, and the comparison of two
    runs meaningless. So the longer clips hold more pause than speech, as voice notes and
    radio calls do; the VAD skips the pauses on both sides alike.
    """
    bank = sentences()
    order = rng.permutation(len(bank))
    want = int(seconds * RATE)
    # As many sentences as fit with half a second around each, at least one (cut short).
    spoken: list[Any] = []
    for index in order:
        said = sum(map(_frames, spoken))
        if spoken and said + _frames(bank[index]) + RATE * (len(spoken) + 1) > want:
            break
        spoken.append(bank[index].apply_gain(_gain_db(rng.uniform(0.4, 1.0))))
    room = max(0, want - sum(map(_frames, spoken)))
    shares = rng.dirichlet(np.ones(len(spoken) + 1)) * room
    # A pause, then each sentence followed by a pause; cut or padded with silence to length.
    note = _silence(int(shares[0]))
    for sentence, pause in zip(spoken, shares[1:], strict=True):
        note += sentence + _silence(int(pause))
    note = note.get_sample_slice(0, want)
    note += _silence(want - _frames(note))
    noise = rng.normal(0.0, NOISE_RMS, want) * _FULL_SCALE
    plant = _pcm(np.round(noise).astype(np.int16))
    # pydub mixes (saturating at full scale, as clipping did) over whole milliseconds: mixed
    # over the note padded to one, then cut back to its length.
    padded = note + _silence(-want % (RATE // 1000))
    return _float32(padded.overlay(plant).get_sample_slice(0, want))


def _resample(audio: Audio, rate: int) -> Audio:
    """Cheap resampling from 16 kHz: linear interpolation up, a two-tap average before taking
    every other sample down to 8 kHz. Good enough for speech the model must still recognise;
    the point is that the pipelines get files at other rates to convert."""
    if rate == RATE:
        return audio
    if rate == RATE // 2:
        even = audio[: len(audio) // 2 * 2].reshape(-1, 2)
        halved: Audio = even.mean(axis=1).astype(np.float32)
        return halved
    count = round(len(audio) * rate / RATE)
    positions = np.arange(count, dtype=np.float64) * (RATE / rate)
    resampled: Audio = np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
    return resampled


def encode(audio: Audio, rate: int, channels: int, ext: str) -> bytes:
    """``audio`` (16 kHz mono) as a file of type ``ext`` at ``rate`` with ``channels``."""
    samples = _resample(audio, rate)
    if channels == 2:
        # Not quite the same signal on both sides, as with two microphones.
        samples = np.stack([samples, samples * np.float32(0.8)], axis=1)
    if ext in _SOUNDFILE:
        container, subtype = _SOUNDFILE[ext]
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate, format=container, subtype=subtype)
        return buffer.getvalue()
    # Raw float samples in on stdin, the file out on stdout; the bitexact flags keep version
    # strings out of the file, so a corpus is the same bytes on every run.
    command = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "f32le",
        "-ar",
        str(rate),
        "-ac",
        str(channels),
        "-i",
        "pipe:0",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-map_metadata",
        "-1",
        *_FFMPEG[ext],
        # An MP4 written to a pipe cannot seek back to put its index first; fragments can.
        *(["-movflags", "frag_keyframe+empty_moov"] if ext == "m4a" else []),
        "pipe:1",
    ]
    done = subprocess.run(
        command, input=np.ascontiguousarray(samples).tobytes(), capture_output=True, check=True
    )
    return done.stdout


def mixed_corpus(
    count: int, *, prefix: str, min_s: float = 3.0, max_s: float = 30.0, seed: int = 7
) -> list[Clip]:
    """``count`` voice notes of ``min_s``-``max_s`` seconds, WAV, FLAC, MP3, Ogg Vorbis and M4A
    in turn, at the rates of ``MIXED_RATES`` and every third one in stereo."""
    rng = np.random.default_rng(seed)
    clips = []
    for n in range(count):
        seconds = float(rng.uniform(min_s, max_s))
        ext = MIXED_FORMATS[n % len(MIXED_FORMATS)]
        # Each run of five formats at one rate, the next five at the next: every format meets
        # every rate within thirty clips.
        rate = MIXED_RATES[(n // len(MIXED_FORMATS)) % len(MIXED_RATES)]
        channels = 2 if n % 3 == 0 else 1
        audio = _speech(rng, seconds)
        data = encode(audio, rate, channels, ext)
        key = f"{prefix}/{n:04d}-{rate // 1000}k-{channels}ch.{ext}"
        clips.append(Clip(key, data, len(audio) / RATE, ext, rate, channels))
    return clips


def short_clips(count: int, *, prefix: str, seed: int = 6) -> list[Clip]:
    """``count`` notes of 1-3 s cut from the sentences at random places and loudness, WAV,
    FLAC and Ogg Vorbis in turn at 16 kHz (as tests/test_faults_load.py makes them)."""
    rng = np.random.default_rng(seed)
    bank = sentences()
    formats = ("wav", "flac", "ogg")
    clips = []
    for n in range(count):
        speech = bank[n % len(bank)]
        length = int(float(rng.uniform(1.0, 3.0)) * RATE)
        start = int(rng.integers(0, max(1, _frames(speech) - length)))
        cut = speech.get_sample_slice(start, start + length)
        audio = _float32(cut.apply_gain(_gain_db(rng.uniform(0.4, 1.0))))
        ext = formats[n % len(formats)]
        data = encode(audio, RATE, 1, ext)
        clips.append(Clip(f"{prefix}/{n:04d}.{ext}", data, len(audio) / RATE, ext, RATE, 1))
    return clips


def total_seconds(clips: list[Clip]) -> float:
    return sum(clip.seconds for clip in clips)


def describe(clips: list[Clip]) -> str:
    """One line: how many clips, how long, which formats and rates."""
    formats = sorted({c.ext for c in clips})
    rates = sorted({c.rate for c in clips})
    lengths = [c.seconds for c in clips]
    megabytes = sum(len(c.data) for c in clips) / 1e6
    layouts = "mono and stereo" if len({c.channels for c in clips}) > 1 else "mono"
    return (
        f"{len(clips)} clips, {total_seconds(clips):.0f} s of audio "
        f"({min(lengths):.1f}-{max(lengths):.1f} s each, {megabytes:.1f} MB), "
        f"{', '.join(formats)} at {', '.join(f'{r / 1000:g}' for r in rates)} kHz, {layouts}"
    )


# What operators say into a radio or phone, in parts that combine into notes of 2-10 s.
_SUBJECTS = (
    "the cooling pump", "the main compressor", "valve seven", "the boiler feed line",
    "the north conveyor", "tank three", "the backup generator", "the flare stack",
    "the water softener", "the heat exchanger", "the mixing drum", "the loading crane",
    "the east fan", "the steam trap", "the fire pump", "the air dryer",
)  # fmt: skip
_STATES = (
    "is running hot", "sounds rough again", "has a small leak", "is back online",
    "needs a new filter", "tripped an alarm", "is vibrating badly", "looks normal now",
    "was shut down for cleaning", "is losing pressure", "shows a high temperature",
    "is making a grinding noise", "keeps cycling on and off", "is full of condensate",
)  # fmt: skip
_FOLLOW_UPS = (
    "I am checking it now.", "Please send a technician.", "We will restart it after lunch.",
    "Call the shift supervisor.", "Log it for the morning crew.", "Nobody was hurt.",
    "The spare parts are in the warehouse.", "Keep an eye on the gauges.",
    "I opened a work order.", "It should be fixed by tonight.",
)  # fmt: skip


@dataclass(frozen=True)
class SpokenClip:
    """A clip spoken by flite from a known text."""

    clip: Clip
    text: str


def _note(rng: np.random.Generator) -> str:
    parts = []
    for _ in range(int(rng.integers(1, 3))):
        subject = str(rng.choice(_SUBJECTS))
        parts.append(f"{subject[0].upper()}{subject[1:]} {rng.choice(_STATES)}.")
    if rng.random() < 0.6:
        parts.append(str(rng.choice(_FOLLOW_UPS)))
    return " ".join(parts)


def spoken_notes(
    count: int, *, prefix: str, min_s: float = 2.0, max_s: float = 10.0, seed: int = 8
) -> list[SpokenClip]:
    """``count`` operator notes of ``min_s``-``max_s`` seconds with their texts, spoken by
    flite (voice ``slt``, 16 kHz mono WAV). Needs the ``flite`` command."""
    rng = np.random.default_rng(seed)
    notes: list[SpokenClip] = []
    while len(notes) < count:
        text = _note(rng)
        done = subprocess.run(
            ["flite", "-voice", "slt", "-t", text, "-o", "/dev/stdout"],
            capture_output=True,
            check=True,
        )
        info = soundfile.info(io.BytesIO(done.stdout))
        if not min_s <= info.duration <= max_s:
            continue
        key = f"{prefix}/{len(notes):04d}.wav"
        clip = Clip(key, done.stdout, info.duration, "wav", info.samplerate, info.channels)
        notes.append(SpokenClip(clip, text))
    return notes


# Notes that name the equipment of the demo facility houston-bay (transcriber.demo_data), as an
# operator says them: a code letter by letter and digit by digit ("P T two oh one"), or the
# sensor's description. The text keeps the code as the plant writes it; a transcript spells
# it the plant's way when it holds the code exactly so.
_CODES_SAID = {
    "TT-101": ("T T one oh one", "reactor jacket temperature"),
    "TT-102": ("T T one oh two", "pump bearing temperature"),
    "TT-103": ("T T one oh three", "outdoor temperature"),
    "PT-201": ("P T two oh one", "reactor pressure"),
    "PT-202": ("P T two oh two", "chlorine line pressure"),
    "HT-301": ("H T three oh one", "warehouse humidity"),
    "HT-302": ("H T three oh two", "electrical room humidity"),
}
_READINGS = (
    "is reading high", "looks normal", "is rising slowly", "dropped a little", "is steady",
    "needs a check", "tripped an alarm",
)  # fmt: skip
TERMS_FACILITY = "houston-bay"


def terms_vocabulary(codes_only: bool = False) -> str:
    """houston-bay's hotwords as the service builds them (transcriber.job_options.vocabulary),
    or its sensor codes alone."""
    from transcriber.demo_data import FACILITIES, SENSORS
    from transcriber.job_options import vocabulary

    (facility,) = [f for f in FACILITIES if f.code == TERMS_FACILITY]
    sensors = [(s.code, s.description) for s in SENSORS if s.facility == TERMS_FACILITY]
    if codes_only:
        return vocabulary(None, [(code, None) for code, _ in sensors])
    return vocabulary(facility.name, sensors)


@dataclass(frozen=True)
class TermNote:
    """A note spoken from ``said``, whose text as the plant writes it is ``text``; ``codes``
    are the sensor codes it names."""

    clip: Clip
    text: str
    codes: tuple[str, ...]


def two_voices(n: int, text: str) -> tuple[str, bytes]:
    """``text`` spoken by flite (voice ``slt``) for even ``n``, espeak-ng (``en-us``) for odd:
    (the voice's name, 16 kHz mono 16-bit WAV). Needs ``flite``, ``espeak-ng`` and ``sox``."""
    if n % 2 == 0:
        name, voice = "flite slt", ["flite", "-voice", "slt", "-t", text, "-o", "/dev/stdout"]
    else:
        name, voice = "espeak-ng en-us", ["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", text]
    raw = subprocess.run(voice, capture_output=True, check=True).stdout
    # Both voices to 16 kHz mono 16-bit, as a recorder would store them. sox, not pydub:
    # espeak-ng speaks at 22.05 kHz, and pydub resamples by linear interpolation with no
    # low-pass filter (audioop.ratecv).
    wav = subprocess.run(
        ["sox", "-t", "wav", "-", "-t", "wav", "-r", "16000", "-c", "1", "-b", "16", "-"],
        input=raw,
        capture_output=True,
        check=True,
    ).stdout
    return name, wav


def term_notes(count: int, *, prefix: str, seed: int = 3) -> list[TermNote]:
    """``count`` notes that name houston-bay's sensors, by code, by code and description, or
    by description alone, in turn; flite (voice ``slt``) and espeak-ng (``en-us``) in turn,
    16 kHz mono WAV. Needs the ``flite``, ``espeak-ng`` and ``sox`` commands."""
    rng = np.random.default_rng(seed)
    notes: list[TermNote] = []
    for n in range(count):
        code = str(rng.choice(sorted(_CODES_SAID)))
        spelled, description = _CODES_SAID[code]
        reading = str(rng.choice(_READINGS))
        follow_up = str(rng.choice(_FOLLOW_UPS)) if rng.random() < 0.6 else ""
        named = (f"{code}", f"The {description} on {code}", f"The {description}")[n % 3]
        text = f"{named} {reading}. {follow_up}".strip()
        said = text.replace(code, spelled)
        _, wav = two_voices(n, said)
        info = soundfile.info(io.BytesIO(wav))
        clip = Clip(f"{prefix}/{n:04d}.wav", wav, info.duration, "wav", 16000, 1)
        notes.append(TermNote(clip, text, (code,) if code in named else ()))
    return notes
