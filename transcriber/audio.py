"""Safe decoding of untrusted audio files to 16 kHz float32 samples.

Decoding goes through PyAV, the FFmpeg binding faster-whisper itself uses, and reproduces
faster-whisper's own resampling (signed 16-bit at 16 kHz, then scaled to [-1, 1)), so that a
file gives the model exactly the samples it would get from bare faster-whisper. pydub and
soundfile are not used here: pydub runs the ffmpeg command line with none of the limits
below, and soundfile reads neither mp3 in older libsndfile builds nor m4a/aac or webm at all.

Audio comes from a bucket anyone with write access can fill, so the file is treated as
hostile:

- its size is checked before anything reads it, and its declared duration before a full
  decode; decoding stops as soon as ``max_seconds`` of audio have come out, whatever the
  header said;
- FFmpeg may only use the ``file`` protocol and a short list of demuxers, so no playlist,
  concat list or reference inside a file can make it open the network or another file;
- every FFmpeg error becomes one of the :class:`AudioError` classes below, with a message a
  user understands, never a raw PyAV traceback.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from transcriber.errors import (
    AudioError,
    AudioTooLarge,
    AudioTooLong,
    CorruptAudio,
    EmptyAudio,
    UnsupportedAudio,
)

SAMPLE_RATE = 16_000

# Demuxers FFmpeg may use: wav, flac, mp3, ogg (vorbis/opus), mov (mp4/m4a), matroska (webm),
# raw aac (adts) and aiff. The names are matched against each demuxer's list of aliases.
ALLOWED_DEMUXERS = ("wav", "w64", "flac", "mp3", "ogg", "mov", "matroska", "aac", "aiff")
_OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    # mov can follow "data references" to other files; never.
    "enable_drefs": "0",
}
# faster-whisper feeds its resampler in chunks of this many samples; doing the same keeps the
# resampled output identical to bare faster-whisper's.
_RESAMPLE_CHUNK = 500_000
# A decoded duration this much shorter than the header's means the file was cut short.
_TRUNCATION_TOLERANCE = 0.9
# The lowest source sample rate accepted. Speech needs a few kHz of it, and nothing lower is
# a real recording, but it can be a decompression bomb: the FIFO hands the resampler
# _RESAMPLE_CHUNK samples at a time, and 500,000 samples at 10 Hz come out at 16 kHz as 800
# million, long before the max_seconds check sees them. From 4 kHz up, one chunk gives at
# most two million.
MIN_SAMPLE_RATE = 4_000
# A WAV data chunk this long or longer is taken for the "length not known yet" that writers
# put in the header of a recording streamed to a pipe (FFmpeg 0xFFFFFFFF, arecord 0x7FFFFFFE,
# SoX 0x7FFFF000), not for a claim about the audio: FFmpeg then reads to the end of the file.
_WAV_UNKNOWN_LENGTH = 0x7FFF0000
# How much of a file's start the checks below read: the WAV chunks before "data" (fmt, fact,
# LIST tags) fit easily.
_HEAD_BYTES = 64 * 1024
# The first bytes of each accepted format, for telling a damaged file of that format from a
# file that is not audio at all when FFmpeg cannot open it (it fails the same way for both).
# Each is a format and the (offset, bytes) its files start with.
_SIGNATURES: tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...] = (
    ("a WAV", ((0, b"RIFF"), (8, b"WAVE"))),
    ("a WAV", ((0, b"RF64"), (8, b"WAVE"))),
    ("a FLAC", ((0, b"fLaC"),)),
    ("an Ogg", ((0, b"OggS"),)),
    ("an MP3", ((0, b"ID3"),)),
    ("an MP4/M4A", ((4, b"ftyp"),)),
    ("a WebM/Matroska", ((0, b"\x1a\x45\xdf\xa3"),)),
    ("an AIFF", ((0, b"FORM"), (8, b"AIF"))),
)


Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded audio: ``channels`` is one mono mix-down, or one array per source channel."""

    channels: tuple[Samples, ...]
    source_sample_rate: int
    source_channels: int
    format_name: str
    codec: str

    @property
    def duration_s(self) -> float:
        return len(self.channels[0]) / SAMPLE_RATE if self.channels else 0.0


def check_size(size_bytes: int, max_bytes: int) -> None:
    """Refuse an object by its size alone (before downloading it)."""
    if size_bytes == 0:
        raise EmptyAudio("the file is empty (0 bytes)")
    if size_bytes > max_bytes:
        raise AudioTooLarge(
            f"the file is {_mib(size_bytes)}, over the limit of {_mib(max_bytes)} "
            "(TRANSCRIBER_MAX_AUDIO_BYTES)"
        )


def decode(
    path: Path, *, max_bytes: int, max_seconds: float, split_channels: bool = False
) -> DecodedAudio:
    """Decode ``path`` to 16 kHz float32: one mono mix, or each channel on its own."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnsupportedAudio(f"cannot read the file: {exc.strerror}") from exc
    check_size(size, max_bytes)
    try:
        head = _read_head(path)
        _check_wav_length(head, size)
        return _decode(path, head, max_seconds, split_channels)
    except AudioError:
        raise
    except av.error.FFmpegError as exc:
        raise CorruptAudio(
            f"the audio data is damaged and cannot be decoded ({_why(exc)})"
        ) from exc
    finally:
        # PyAV's resampler keeps buffers alive until a collection runs; without this a
        # worker's memory grows file after file (faster-whisper issue #390).
        gc.collect()


def _decode(path: Path, head: bytes, max_seconds: float, split_channels: bool) -> DecodedAudio:
    try:
        container = av.open(str(path), mode="r", options=_OPEN_OPTIONS, metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.ArgumentError, ValueError) as exc:
        kind = _signature(head)
        if kind is not None:
            # An m4a whose recorder died before writing its index (the "moov" box at the
            # end), a WAV cut inside its header: the user uploaded a real audio file, so
            # "not audio" would send them looking in the wrong place.
            raise CorruptAudio(
                f"the file starts like {kind} file but cannot be opened: it is damaged or "
                "incomplete"
            ) from exc
        raise UnsupportedAudio(
            "not a supported audio file (expected wav, flac, mp3, ogg/opus, m4a/aac or webm)"
        ) from exc
    except av.error.FFmpegError as exc:
        raise UnsupportedAudio(f"cannot open the file as audio ({_why(exc)})") from exc
    with container:
        if not container.streams.audio:
            raise UnsupportedAudio(f"the {container.format.name} file has no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            # FFmpeg found an audio stream but has no decoder for it (a WAV with an unknown
            # format tag, or 16-bit float): PyAV gives no codec context at all.
            raise UnsupportedAudio(
                f"the {container.format.name} file's audio is in an encoding that cannot be decoded"
            )
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise AudioTooLong(
                f"the audio is {_duration(declared)} long, over the limit of "
                f"{_duration(max_seconds)} (TRANSCRIBER_MAX_AUDIO_SECONDS)"
            )
        source_channels = stream.codec_context.channels or 1
        layout = stream.layout.name if split_channels and source_channels > 1 else "mono"
        resampler = av.AudioResampler(format="s16", layout=layout, rate=SAMPLE_RATE)
        limit = int(max_seconds * SAMPLE_RATE)
        chunks: list[npt.NDArray[np.int16]] = []
        produced = 0
        demuxed = _PacketCount()
        valid = _valid_frames(container, stream, demuxed)
        for frame in _resampled(_grouped(valid), resampler):
            array = frame.to_ndarray()
            chunks.append(array)
            produced += array.shape[-1] // (source_channels if layout != "mono" else 1)
            if produced > limit:
                raise AudioTooLong(
                    f"the audio is longer than the limit of {_duration(max_seconds)} "
                    "(TRANSCRIBER_MAX_AUDIO_SECONDS); its header did not say so"
                )
        codec = stream.codec_context.name
        rate = stream.codec_context.sample_rate or 0
        format_name = container.format.name
    if not chunks or produced == 0:
        if not declared and not demuxed.packets:
            # A well-formed file that holds no samples (a WAV header with an empty data
            # chunk: a recorder stopped at once) is empty, not damaged.
            raise EmptyAudio(f"the {format_name} file holds no audio (0 samples)")
        raise CorruptAudio("no audio could be decoded from the file")
    interleaved = np.concatenate(chunks, axis=-1).reshape(-1)
    if declared is not None and declared > 1.0:
        decoded = produced / SAMPLE_RATE
        if decoded < declared * _TRUNCATION_TOLERANCE - 0.5:
            raise CorruptAudio(
                f"the file is truncated: its header says {_duration(declared)} of audio, "
                f"but only {_duration(decoded)} could be decoded"
            )
    samples = interleaved.astype(np.float32) / 32768.0
    if layout == "mono":
        channels: tuple[Samples, ...] = (samples,)
    else:
        # s16 is packed: samples of all channels interleaved frame by frame.
        frames = samples.reshape(-1, source_channels)
        channels = tuple(np.ascontiguousarray(frames[:, c]) for c in range(source_channels))
    return DecodedAudio(channels, rate, source_channels, format_name, codec)


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(_HEAD_BYTES)
    except OSError as exc:
        raise UnsupportedAudio(f"cannot read the file: {exc.strerror}") from exc


def _signature(head: bytes) -> str | None:
    """Which accepted format the file's first bytes announce, if any ("a FLAC")."""
    for kind, marks in _SIGNATURES:
        if all(head[offset : offset + len(magic)] == magic for offset, magic in marks):
            return kind
    return None


def _check_wav_length(head: bytes, size: int) -> None:
    """Refuse a WAV whose data chunk announces more bytes than the file holds.

    FFmpeg reads such a file to its end without a word (it cannot tell a truncated file from
    one streamed with an unknown length), so the truncation check after decoding never sees
    it, and half a recording would come out as if it were all of it.
    """
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(head):
        chunk_id = head[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", head, offset + 4)
        start = offset + 8
        if chunk_id == b"data":
            present = size - start
            if (
                0 < chunk_size < _WAV_UNKNOWN_LENGTH
                and present < chunk_size * _TRUNCATION_TOLERANCE
            ):
                raise CorruptAudio(
                    f"the file is truncated: its WAV header announces {chunk_size:,} bytes of "
                    f"audio, but only {max(present, 0):,} are there"
                )
            return
        offset = start + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes


def _declared_seconds(container: Any, stream: Any) -> float | None:
    """The duration the file's header claims, if it claims one."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


@dataclass
class _PacketCount:
    """How many packets with data the demuxer gave (decodable or not)."""

    packets: int = 0


def _valid_frames(container: Any, stream: Any, demuxed: _PacketCount) -> Iterator[Any]:
    """Decoded frames, skipping packets FFmpeg finds invalid (as faster-whisper does): a
    damaged frame in the middle of a long recording costs a few milliseconds, not the file."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            demuxed.packets += 1
            continue
        if packet.size:  # the demuxer ends with an empty packet that flushes the decoder
            demuxed.packets += 1
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def _grouped(frames: Iterator[Any]) -> Iterator[Any]:
    """Frames regrouped through a FIFO into chunks of ``_RESAMPLE_CHUNK`` samples."""
    fifo = av.AudioFifo()
    first: tuple[str, int, int] | None = None
    for frame in frames:
        if not frame.samples:
            continue  # the FIFO ignores empty frames; so does the check below
        # A stream can change its sample format, channel count or rate partway through (two
        # files glued together, a chained ogg). PyAV's FIFO checks the rate and format with a
        # bare ValueError, and does not check the channel count at all: a mono frame written
        # to a FIFO set up for stereo makes it read a second plane that is not there, and
        # the worker dies of a segmentation fault.
        shape = (frame.format.name, frame.layout.nb_channels, frame.sample_rate)
        if first is None:
            if frame.sample_rate < MIN_SAMPLE_RATE:
                raise UnsupportedAudio(
                    f"the sample rate of {frame.sample_rate} Hz is too low for speech "
                    f"(it must be at least {MIN_SAMPLE_RATE} Hz)"
                )
            first = shape
        elif shape != first:
            raise CorruptAudio(
                "the audio changes its sample rate or number of channels partway through, "
                "so it cannot be decoded as one recording"
            )
        frame.pts = None  # the FIFO checks timestamps for continuity; gaps are not errors here
        fifo.write(frame)
        if fifo.samples >= _RESAMPLE_CHUNK:
            yield fifo.read()
    if fifo.samples > 0:
        yield fifo.read()


def _resampled(frames: Iterator[Any], resampler: Any) -> Iterator[Any]:
    for frame in frames:
        yield from resampler.resample(frame)
    yield from resampler.resample(None)  # flush what the resampler holds back


def _why(exc: av.error.FFmpegError) -> str:
    return str(getattr(exc, "strerror", None) or exc).rstrip(".")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
