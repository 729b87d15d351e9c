#!/usr/bin/env bash
# Regenerates the synthetic speech test fixtures in this directory
# (tests/data/): short operator-style voice notes spoken by the flite "slt"
# voice, converted into a range of containers, codecs, sample rates and
# channel layouts (WAV, FLAC, MP3, Ogg Opus, Ogg Vorbis, AAC/M4A, WebM/Opus),
# plus a two-speaker stereo file whose channels take turns.
# See README.md next to this script for the list of files and their texts.
#
# Needs: bash, flite (with the slt voice), sox, ffmpeg (built with libmp3lame,
# libopus, libvorbis and the native aac/flac encoders).
#   Debian/Ubuntu: apt-get install flite sox libsox-fmt-all ffmpeg
#
# Usage (from any directory): bash tests/data/make_data.sh
#
# Output is deterministic for a given set of tool versions: flite and sox are
# deterministic, and ffmpeg runs with metadata stripped and bitexact flags so
# no version strings, timestamps or random stream serials end up in the files.
set -euo pipefail

OUT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

TEXT_A="Pressure on line four is rising. I am checking the relief valve now."
TEXT_B="The cooling pump is running hot. Bearing temperature is ninety degrees."
TEXT_C="Humidity in the electrical room is high. Please send an electrician."

# flite speaking rate: < 1 speaks faster. Slightly faster than the default
# keeps each clip short (and the uncompressed files small).
STRETCH=0.8
# Silence kept before/after each utterance, seconds.
PAD=0.1
# Extra silence between the two speakers' turns in two_party_stereo.wav, s.
TURN_GAP=1.3

for cmd in flite sox ffmpeg; do
    command -v "$cmd" >/dev/null || { echo "missing tool: $cmd" >&2; exit 1; }
done

# speak NAME TEXT -> $WORK/NAME.wav : 16 kHz mono s16, edge silence trimmed
# to exactly $PAD seconds on each side.
speak() {
    local name="$1" text="$2"
    flite -voice slt --setf duration_stretch="$STRETCH" -t "$text" \
        -o "$WORK/$name.raw.wav"
    sox "$WORK/$name.raw.wav" -b 16 -e signed-integer "$WORK/$name.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
        pad "$PAD" "$PAD"
}

speak a "$TEXT_A"
speak b "$TEXT_B"
speak c "$TEXT_C"

FF=(ffmpeg -y -hide_banner -loglevel error -nostdin)
# Flags applied to every output: strip metadata, no encoder/version tags.
BX=(-map_metadata -1 -fflags +bitexact -flags:a +bitexact)

# conv IN OUT [ffmpeg output options...]
conv() {
    local in="$1" out="$2"
    shift 2
    "${FF[@]}" -i "$WORK/$in.wav" "${BX[@]}" "$@" "$OUT_DIR/$out"
}

# --- sentence A ------------------------------------------------------------
conv a speech_16k_mono.wav    -c:a pcm_s16le -ar 16000 -ac 1
conv a speech_8k_mono.wav     -c:a pcm_s16le -ar 8000  -ac 1
conv a speech_44k_stereo.wav  -c:a pcm_s16le -ar 44100 -ac 2
conv a speech_48k_mono.flac   -c:a flac -sample_fmt s16 -ar 48000 -ac 1
conv a speech_44k_mono.m4a    -c:a aac -b:a 48k -ar 44100 -ac 1

# --- sentence B ------------------------------------------------------------
conv b speech_44k_stereo.mp3  -c:a libmp3lame -b:a 64k -ar 44100 -ac 2 \
    -id3v2_version 0
conv b speech_48k_mono.ogg    -c:a libopus -b:a 24k -ar 48000 -ac 1
conv b speech_48k_stereo.webm -c:a libopus -b:a 32k -ar 48000 -ac 2
conv b speech_16k_mono.ogg    -c:a libvorbis -q:a 3 -ar 16000 -ac 1

# --- two speakers taking turns (B on the left, then C on the right) --------
nb=$(soxi -s "$WORK/b.wav")
nc=$(soxi -s "$WORK/c.wav")
ngap=$(awk -v g="$TURN_GAP" 'BEGIN { printf "%d", g * 16000 }')
# left : B, then silence for the gap and for all of C
sox "$WORK/b.wav" "$WORK/left.wav"  pad 0 "$((ngap + nc))s"
# right: silence for all of B and the gap, then C
sox "$WORK/c.wav" "$WORK/right.wav" pad "$((nb + ngap))s" 0
sox -M "$WORK/left.wav" "$WORK/right.wav" "$WORK/two.wav"
conv two two_party_stereo.wav -c:a pcm_s16le -ar 16000 -ac 2

# --- German (espeak-ng: flite speaks only English), for the multilingual models ---
espeak-ng -v de -s 140 -w "$WORK/de_raw.wav" \
    "Der Druck in Leitung vier steigt. Ich prüfe jetzt das Sicherheitsventil."
conv de_raw german_16k_mono.flac -c:a flac -sample_fmt s16 -ar 16000 -ac 1

echo "wrote fixtures to $OUT_DIR:"
ls -l "$OUT_DIR"
