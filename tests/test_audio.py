"""Tests of transcriber.audio: the committed speech files, channel splitting, bad and hostile
input, and the limits on size and duration.

No Whisper model is loaded here; faster-whisper is used only for its ``decode_audio``, which
``decode`` must match sample for sample. Files these tests need beyond tests/data are made
with PyAV (or the wave module) in temporary directories.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper.audio import decode_audio

from transcriber.audio import MIN_SAMPLE_RATE, SAMPLE_RATE, DecodedAudio, check_size, decode
from transcriber.errors import (
    AudioError,
    AudioTooLarge,
    AudioTooLong,
    CorruptAudio,
    EmptyAudio,
    PermanentError,
    UnsupportedAudio,
)

DATA = Path(__file__).parent / "data"
MAX_BYTES = 50 * 1024 * 1024
MAX_SECONDS = 3600.0


@dataclass(frozen=True)
class Speech:
    """A committed speech file and what tests/data/README.md says about it."""

    name: str
    rate: int
    channels: int
    seconds: float  # the duration ffprobe reports
    format_name: str  # PyAV's (FFmpeg's) name of the demuxer

    @property
    def path(self) -> Path:
        return DATA / self.name


SPEECH = [
    Speech("speech_16k_mono.wav", 16_000, 1, 3.31, "wav"),
    Speech("speech_8k_mono.wav", 8_000, 1, 3.31, "wav"),
    Speech("speech_44k_stereo.wav", 44_100, 2, 3.31, "wav"),
    Speech("speech_48k_mono.flac", 48_000, 1, 3.31, "flac"),
    Speech("speech_44k_mono.m4a", 44_100, 1, 3.31, "mov,mp4,m4a,3gp,3g2,mj2"),
    Speech("speech_44k_stereo.mp3", 44_100, 2, 3.24, "mp3"),
    Speech("speech_48k_mono.ogg", 48_000, 1, 3.22, "ogg"),
    Speech("speech_48k_stereo.webm", 48_000, 2, 3.22, "matroska,webm"),
    Speech("speech_16k_mono.ogg", 16_000, 1, 3.21, "ogg"),
    Speech("two_party_stereo.wav", 16_000, 2, 7.97, "wav"),
    Speech("german_16k_mono.flac", 16_000, 1, 5.31, "flac"),
    Speech("packing_1.flac", 16_000, 1, 2.30, "flac"),
    Speech("packing_2.flac", 16_000, 1, 2.55, "flac"),
    Speech("packing_3.flac", 16_000, 1, 2.29, "flac"),
    Speech("packing_4.flac", 16_000, 1, 2.71, "flac"),
    Speech("packing_5.flac", 16_000, 1, 2.09, "flac"),
    Speech("packing_6.flac", 16_000, 1, 2.16, "flac"),
]
SPEECH_PARAMS = [pytest.param(s, id=s.name) for s in SPEECH]
STEREO_PARAMS = [pytest.param(s, id=s.name) for s in SPEECH if s.channels == 2]
NOT_AUDIO = {"README.md", "make_data.sh", "make_packing.sh"}


def _decode(
    path: Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_seconds: float = MAX_SECONDS,
    split_channels: bool = False,
) -> DecodedAudio:
    return decode(path, max_bytes=max_bytes, max_seconds=max_seconds, split_channels=split_channels)


def _decode_error(
    path: Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_seconds: float = MAX_SECONDS,
    split_channels: bool = False,
) -> AudioError:
    """The AudioError ``decode`` raises for ``path``. Any other exception, a PyAV one above
    all, is not caught here, so it fails the test."""
    with pytest.raises(AudioError) as info:
        _decode(path, max_bytes=max_bytes, max_seconds=max_seconds, split_channels=split_channels)
    error = info.value
    assert not isinstance(error, av.error.FFmpegError)
    # Written for a user: no raw FFmpeg error text such as "[Errno 1094995529] ...".
    assert "Errno" not in str(error)
    assert "avcodec" not in str(error)
    return error


def _rms(samples: npt.NDArray[np.float32], start_s: float, end_s: float) -> float:
    window = samples[int(start_s * SAMPLE_RATE) : int(end_s * SAMPLE_RATE)].astype(np.float64)
    return float(np.sqrt(np.mean(window**2)))


def _energy_share(samples: npt.NDArray[np.float32], start_s: float, end_s: float) -> float:
    """The share of the whole signal's energy that lies between ``start_s`` and ``end_s``."""
    energy = samples.astype(np.float64) ** 2
    part = energy[int(start_s * SAMPLE_RATE) : int(end_s * SAMPLE_RATE)]
    return float(part.sum() / energy.sum())


def _write_silent_flac(path: Path, *, rate: int, seconds: int) -> None:
    """Mono 16-bit FLAC of digital silence. With the largest frames FLAC allows and no
    compression search, two hours at 4 kHz encode in a fraction of a second into ~15 KB."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "flac",
            rate=rate,
            layout="mono",
            options={"compression_level": "0", "frame_size": "65535"},
        )
        stream.codec_context.format = "s16"
        block = np.zeros((1, 1 << 20), dtype=np.int16)
        total = seconds * rate
        written = 0
        while written < total:
            count = min(block.shape[1], total - written)
            frame = av.AudioFrame.from_ndarray(block[:, :count], format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = written
            container.mux(stream.encode(frame))
            written += count
        container.mux(stream.encode(None))


def _hide_flac_length(path: Path) -> None:
    """Zero the total sample count in FLAC's STREAMINFO: "length unknown", which the format
    allows (a stream written live), so the header no longer says how long the audio is."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    assert data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    # STREAMINFO starts at byte 8; its 36-bit total sample count takes the low 4 bits of
    # byte 13 of the block and all of bytes 14 to 17.
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = b"\0\0\0\0"
    path.write_bytes(bytes(data))


def _declared_seconds(path: Path) -> float | None:
    """The duration PyAV reads from the header, as ``decode`` does before decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None


def _write_tone_mp3(path: Path, *, rate: int, layout: str, seconds: float) -> None:
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout=layout)
        total = int(rate * seconds)
        tone = (0.3 * np.sin(np.arange(total) * 2 * np.pi * 440 / rate)).astype(np.float32)
        for start in range(0, total, 1152):
            planes = np.tile(tone[start : start + 1152], (channels, 1))
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# --- the committed speech files ------------------------------------------------------------


def test_every_audio_file_in_tests_data_is_in_the_table_of_this_module() -> None:
    on_disk = {p.name for p in DATA.iterdir() if p.is_file()} - NOT_AUDIO
    assert on_disk == {s.name for s in SPEECH}


@pytest.mark.parametrize("speech", SPEECH_PARAMS)
def test_speech_file_decodes_to_one_16k_float32_channel_of_its_documented_length(
    speech: Speech,
) -> None:
    audio = _decode(speech.path)

    assert len(audio.channels) == 1
    samples = audio.channels[0]
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert float(samples.min()) >= -1.0
    assert float(samples.max()) <= 1.0
    assert float(np.abs(samples).max()) > 0.1  # speech, not silence
    assert audio.duration_s == len(samples) / SAMPLE_RATE
    assert abs(audio.duration_s - speech.seconds) <= 0.1
    assert audio.source_sample_rate == speech.rate
    assert audio.source_channels == speech.channels
    assert audio.format_name == speech.format_name


@pytest.mark.parametrize("speech", SPEECH_PARAMS)
def test_mono_mix_is_sample_for_sample_what_faster_whisper_decodes(speech: Speech) -> None:
    audio = _decode(speech.path)

    expected = decode_audio(str(speech.path))
    assert np.array_equal(audio.channels[0], expected)


# --- split_channels --------------------------------------------------------------------------


@pytest.mark.parametrize("speech", STEREO_PARAMS)
def test_split_channels_of_a_stereo_file_gives_two_channels_as_long_as_the_mix(
    speech: Speech,
) -> None:
    mix = _decode(speech.path)
    split = _decode(speech.path, split_channels=True)

    assert len(split.channels) == 2
    left, right = split.channels
    assert left.dtype == np.float32
    assert right.dtype == np.float32
    assert len(left) == len(right) == len(mix.channels[0])
    assert split.source_channels == 2


@pytest.mark.parametrize("speech", STEREO_PARAMS)
def test_split_channels_are_sample_for_sample_faster_whispers_split_stereo(
    speech: Speech,
) -> None:
    left, right = _decode(speech.path, split_channels=True).channels

    expected_left, expected_right = decode_audio(str(speech.path), split_stereo=True)
    assert np.array_equal(left, expected_left)
    assert np.array_equal(right, expected_right)


def test_split_channels_keep_each_speaker_of_two_party_stereo_on_their_own_side() -> None:
    left, right = _decode(DATA / "two_party_stereo.wav", split_channels=True).channels

    # Left speaks from 0.1 s to about 3.1 s; right from about 4.6 s to about 7.9 s.
    assert _rms(left, 0.1, 3.1) > 0.05
    assert _rms(right, 0.1, 3.1) < 1e-4
    assert _rms(right, 4.6, 7.9) > 0.05
    assert _rms(left, 4.6, 7.9) < 1e-4
    assert _energy_share(left, 0.0, 3.2) > 0.99
    assert _energy_share(right, 4.5, 8.0) > 0.99


def test_split_channels_of_a_mono_file_gives_its_one_channel() -> None:
    path = DATA / "speech_16k_mono.wav"

    split = _decode(path, split_channels=True)

    assert len(split.channels) == 1
    assert np.array_equal(split.channels[0], _decode(path).channels[0])


# --- bad input -----------------------------------------------------------------------------


def test_zero_byte_file_raises_empty_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")

    error = _decode_error(path)

    assert type(error) is EmptyAudio
    assert "empty" in str(error)


def test_random_bytes_named_wav_raise_unsupported_audio(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(1234).bytes(4096))

    error = _decode_error(path)

    assert type(error) is UnsupportedAudio
    assert "not a supported audio file" in str(error)


def test_text_file_named_mp3_raises_unsupported_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("Shift log, line four\n" + "Relief valve checked, pressure normal.\n" * 30)

    error = _decode_error(path)

    assert type(error) is UnsupportedAudio
    assert "not a supported audio file" in str(error)


def test_mp3_cut_to_40_percent_raises_corrupt_audio_saying_truncated(tmp_path: Path) -> None:
    data = (DATA / "speech_44k_stereo.mp3").read_bytes()
    path = tmp_path / "cut.mp3"
    path.write_bytes(data[: len(data) * 4 // 10])
    # The Xing/LAME header at the start still gives the full length, which is what tells
    # the decoder that most of the audio is missing.
    declared = _declared_seconds(path)
    assert declared is not None
    assert abs(declared - 3.24) <= 0.1

    error = _decode_error(path)

    assert type(error) is CorruptAudio
    assert "truncated" in str(error)


def test_mp3_cut_to_its_first_200_bytes_raises_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "stub.mp3"
    path.write_bytes((DATA / "speech_44k_stereo.mp3").read_bytes()[:200])

    error = _decode_error(path)

    assert isinstance(error, CorruptAudio | UnsupportedAudio)


def test_file_over_max_bytes_raises_audio_too_large_naming_the_setting() -> None:
    path = DATA / "speech_16k_mono.wav"

    error = _decode_error(path, max_bytes=path.stat().st_size - 1)

    assert type(error) is AudioTooLarge
    assert "TRANSCRIBER_MAX_AUDIO_BYTES" in str(error)


def test_file_at_exactly_max_bytes_is_decoded() -> None:
    path = DATA / "speech_16k_mono.wav"

    audio = _decode(path, max_bytes=path.stat().st_size)

    assert abs(audio.duration_s - 3.31) <= 0.1


def test_oversized_garbage_is_refused_by_its_size_before_anything_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(99).bytes(8192))
    # Under the limit, the same bytes are refused as unsupported: only the size check can
    # give AudioTooLarge.
    assert type(_decode_error(path)) is UnsupportedAudio

    def must_not_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("av.open was called for a file over the size limit")

    monkeypatch.setattr(av, "open", must_not_open)

    error = _decode_error(path, max_bytes=4096)

    assert type(error) is AudioTooLarge
    assert "TRANSCRIBER_MAX_AUDIO_BYTES" in str(error)


@pytest.fixture(scope="module")
def two_hour_silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "two_hours.flac"
    _write_silent_flac(path, rate=MIN_SAMPLE_RATE, seconds=2 * 3600)
    return path


def test_two_hour_file_is_refused_by_its_declared_duration_before_decoding(
    two_hour_silence: Path,
) -> None:
    assert _declared_seconds(two_hour_silence) == 7200.0
    assert two_hour_silence.stat().st_size < 100_000

    started = time.perf_counter()
    error = _decode_error(two_hour_silence, max_seconds=3600)
    elapsed = time.perf_counter() - started

    assert type(error) is AudioTooLong
    assert "2:00:00" in str(error)
    assert "1:00:00" in str(error)
    assert "TRANSCRIBER_MAX_AUDIO_SECONDS" in str(error)
    # Decoding and resampling all two hours takes seconds; refusing by the header, a few ms.
    assert elapsed < 1.0


def test_file_hiding_its_length_stops_decoding_once_max_seconds_have_come_out(
    two_hour_silence: Path, tmp_path: Path
) -> None:
    path = tmp_path / "no_length.flac"
    path.write_bytes(two_hour_silence.read_bytes())
    _hide_flac_length(path)
    assert _declared_seconds(path) is None

    started = time.perf_counter()
    error = _decode_error(path, max_seconds=60)
    elapsed = time.perf_counter() - started

    assert type(error) is AudioTooLong
    assert "header did not say so" in str(error)
    assert "1:00" in str(error)
    # All two hours would take seconds: decoding stopped soon after the first minute.
    assert elapsed < 1.0


@pytest.mark.parametrize("split_channels", [False, True], ids=["mix", "split"])
def test_webm_whose_header_understates_its_duration_stops_at_max_seconds(
    tmp_path: Path, split_channels: bool
) -> None:
    data = (DATA / "speech_48k_stereo.webm").read_bytes()
    # Matroska's Segment Info (ID 1549A966) holds Duration (ID 4489) as an 8-byte float,
    # in milliseconds here; say 1 s instead of 3.22 s.
    info = data.index(bytes.fromhex("1549a966"))
    duration = data.index(bytes.fromhex("448988"), info) + 3
    assert struct.unpack(">d", data[duration : duration + 8]) == (3219.0,)
    path = tmp_path / "understated.webm"
    path.write_bytes(data[:duration] + struct.pack(">d", 1000.0) + data[duration + 8 :])
    assert _declared_seconds(path) == 1.0

    error = _decode_error(path, max_seconds=2, split_channels=split_channels)

    assert type(error) is AudioTooLong
    assert "header did not say so" in str(error)
    # Under a limit it fits, every channel comes out whole (the limit counts per channel).
    audio = _decode(path, max_seconds=4, split_channels=split_channels)
    assert len(audio.channels) == (2 if split_channels else 1)
    assert all(abs(len(c) / SAMPLE_RATE - 3.22) <= 0.1 for c in audio.channels)


def test_wav_whose_header_claims_1s_of_a_10s_recording_never_yields_more_than_that(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liar.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        tone = 8000 * np.sin(np.arange(10 * 16_000) * 2 * np.pi * 440 / 16_000)
        out.writeframes(tone.astype("<i2").tobytes())
    data = bytearray(path.read_bytes())
    assert data[36:40] == b"data"  # the canonical 44-byte header
    data[4:8] = struct.pack("<I", 36 + 32_000)  # RIFF size
    data[40:44] = struct.pack("<I", 32_000)  # data size: 1 s of 16-bit mono at 16 kHz
    path.write_bytes(bytes(data))

    try:
        audio = _decode(path, max_seconds=5)
    except AudioTooLong:
        return  # the decoder read on past the header, and the limit stopped it
    # Otherwise the decoder believed the header: 1 s (under max_seconds), never all 10 s.
    assert audio.duration_s <= 1.0


def _with_wav_data_size(data: bytes, size: int) -> bytes:
    """``data`` (a WAV file) with its data chunk's size field set to ``size``."""
    at = data.index(b"data") + 4
    return data[:at] + struct.pack("<I", size) + data[at + 4 :]


def test_wav_cut_in_half_raises_corrupt_audio_saying_truncated(tmp_path: Path) -> None:
    data = (DATA / "speech_16k_mono.wav").read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    # FFmpeg alone reads what is there and reports that as the whole length.
    declared = _declared_seconds(path)
    assert declared is not None
    assert declared < 2.0

    error = _decode_error(path)

    assert type(error) is CorruptAudio
    assert "truncated" in str(error)
    assert f"{len(data) - 44:,} bytes" in str(error)


def test_wav_whose_header_cannot_be_opened_raises_corrupt_audio(tmp_path: Path) -> None:
    path = tmp_path / "stub.wav"
    path.write_bytes((DATA / "speech_16k_mono.wav").read_bytes()[:30])

    error = _decode_error(path)

    assert type(error) is CorruptAudio
    assert "starts like a WAV file" in str(error)


@pytest.mark.parametrize(
    "size",
    [0, 0x7FFFF000, 0x7FFFFFFE, 0xFFFFFFFF],
    ids=["zero", "sox", "arecord", "ffmpeg"],
)
def test_wav_streamed_with_an_unknown_length_decodes_to_its_end(tmp_path: Path, size: int) -> None:
    path = tmp_path / "streamed.wav"
    path.write_bytes(_with_wav_data_size((DATA / "speech_16k_mono.wav").read_bytes(), size))

    audio = _decode(path)

    assert abs(audio.duration_s - 3.31) <= 0.05


def test_wav_with_a_header_and_no_samples_raises_empty_audio(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
    assert path.stat().st_size == 44

    error = _decode_error(path)

    assert type(error) is EmptyAudio
    assert "no audio" in str(error)


def test_wav_in_an_encoding_without_a_decoder_raises_unsupported_audio(tmp_path: Path) -> None:
    data = bytearray((DATA / "speech_16k_mono.wav").read_bytes())
    assert data[12:16] == b"fmt "
    data[20:22] = struct.pack("<H", 0x1234)  # a format tag no codec has
    path = tmp_path / "odd.wav"
    path.write_bytes(bytes(data))

    error = _decode_error(path)

    assert type(error) is UnsupportedAudio
    assert "encoding" in str(error)


def test_m4a_missing_its_index_raises_corrupt_audio_not_unsupported(tmp_path: Path) -> None:
    # The "moov" box comes last in these files: cut it off, as a recorder that died does.
    data = (DATA / "speech_44k_mono.m4a").read_bytes()
    assert data[4:8] == b"ftyp"
    assert b"moov" in data[len(data) // 2 :]
    path = tmp_path / "cut.m4a"
    path.write_bytes(data[: len(data) // 2])

    error = _decode_error(path)

    assert type(error) is CorruptAudio
    assert "MP4/M4A" in str(error)


def test_file_with_only_a_video_stream_raises_unsupported_audio(tmp_path: Path) -> None:
    path = tmp_path / "video.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=1)
        stream.width = 16
        stream.height = 16
        stream.pix_fmt = "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(
                np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24"
            ).reformat(format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    error = _decode_error(path)

    assert type(error) is UnsupportedAudio
    assert "no audio stream" in str(error)


def test_missing_file_raises_unsupported_audio(tmp_path: Path) -> None:
    error = _decode_error(tmp_path / "never_uploaded.wav")

    assert type(error) is UnsupportedAudio
    assert "cannot read the file" in str(error)


@pytest.fixture(scope="module")
def tone_mp3s(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mp3")
    made = {}
    for name, rate, layout in [("mono_44k", 44_100, "mono"), ("stereo_48k", 48_000, "stereo")]:
        made[name] = folder / f"{name}.mp3"
        _write_tone_mp3(made[name], rate=rate, layout=layout, seconds=1.0)
    return made


# Run in a child process: before audio.py checked each frame, the stereo-then-mono file
# crashed the interpreter with a segmentation fault, which would take pytest down with it.
_DECODE_IN_CHILD = """
import sys
from pathlib import Path
from transcriber.audio import decode
from transcriber.errors import AudioError
try:
    decode(Path(sys.argv[1]), max_bytes=1 << 30, max_seconds=600)
except AudioError as exc:
    print(f"{type(exc).__name__}: {exc}")
else:
    print("decoded")
"""


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("speech_44k_stereo", "mono_44k", id="stereo-then-mono"),
        pytest.param("mono_44k", "speech_44k_stereo", id="mono-then-stereo"),
        pytest.param("speech_44k_stereo", "stereo_48k", id="44.1k-then-48k"),
    ],
)
def test_mp3s_glued_together_with_different_formats_raise_corrupt_audio_not_a_crash(
    tmp_path: Path, tone_mp3s: dict[str, Path], first: str, second: str
) -> None:
    sources = {**tone_mp3s, "speech_44k_stereo": DATA / "speech_44k_stereo.mp3"}
    path = tmp_path / "glued.mp3"
    path.write_bytes(sources[first].read_bytes() + sources[second].read_bytes())

    child = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert child.returncode == 0, f"the decoder died ({child.returncode}): {child.stderr[-2000:]}"
    assert child.stdout.startswith("CorruptAudio: the audio changes its sample rate or number")


def test_sample_rate_too_low_for_speech_is_refused_before_resampling(tmp_path: Path) -> None:
    # 100 Hz with no length in the header: resampled to 16 kHz, the first FIFO chunk alone
    # would be 80 million samples (1.6 GB of memory) before the max_seconds check could run.
    path = tmp_path / "infrasound.flac"
    _write_silent_flac(path, rate=100, seconds=100_000)
    _hide_flac_length(path)
    assert _declared_seconds(path) is None

    started = time.perf_counter()
    error = _decode_error(path, max_seconds=60)
    elapsed = time.perf_counter() - started

    assert type(error) is UnsupportedAudio
    assert "100 Hz is too low" in str(error)
    assert elapsed < 1.0


# --- hostile containers --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["evil.wav", "evil.m3u8"])
def test_hls_playlist_pointing_at_a_local_wav_raises_unsupported_audio(
    tmp_path: Path, name: str
) -> None:
    target = tmp_path / "target.wav"
    target.write_bytes((DATA / "speech_16k_mono.wav").read_bytes())
    path = tmp_path / name
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n"
        f"#EXTINF:3.3,\n{target.name}\n#EXTINF:3.3,\n{target}\n#EXT-X-ENDLIST\n"
    )

    error = _decode_error(path)

    assert type(error) is UnsupportedAudio


def test_ffconcat_list_naming_a_local_wav_raises_unsupported_audio(tmp_path: Path) -> None:
    target = tmp_path / "target.wav"
    target.write_bytes((DATA / "speech_16k_mono.wav").read_bytes())
    path = tmp_path / "evil2.wav"
    path.write_text(f"ffconcat version 1.0\nfile '{target.name}'\n")
    # The list is live: PyAV without decode's restrictions follows it into target.wav.
    with av.open(str(path)) as container:
        assert container.format.name == "concat"
        assert sum(frame.samples for frame in container.decode(audio=0)) > 16_000

    error = _decode_error(path)

    assert type(error) is UnsupportedAudio


# --- check_size and the error classes ------------------------------------------------------


def test_check_size_of_zero_bytes_raises_empty_audio() -> None:
    with pytest.raises(EmptyAudio, match="empty"):
        check_size(0, 10)


def test_check_size_one_byte_over_the_limit_raises_audio_too_large() -> None:
    with pytest.raises(AudioTooLarge, match="TRANSCRIBER_MAX_AUDIO_BYTES"):
        check_size(11, 10)


def test_check_size_at_the_limit_passes() -> None:
    check_size(10, 10)
    check_size(1, 10)


@pytest.mark.parametrize(
    ("error_class", "category"),
    [
        (EmptyAudio, "empty"),
        (UnsupportedAudio, "unsupported"),
        (CorruptAudio, "corrupt"),
        (AudioTooLong, "too_long"),
        (AudioTooLarge, "too_large"),
    ],
)
def test_each_audio_error_is_a_permanent_error_with_its_documented_category(
    error_class: type[AudioError], category: str
) -> None:
    assert error_class.category == category
    assert error_class("message").category == category
    assert issubclass(error_class, AudioError)
    assert issubclass(error_class, PermanentError)
