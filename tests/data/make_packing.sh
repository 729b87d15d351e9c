#!/usr/bin/env bash
# Regenerates packing_*.flac: six short notes (flite, voice slt, 16 kHz mono FLAC) whose
# vocabularies share no word, for the test that packed windows give every word back to its
# own clip (tests/test_packing.py). The texts are in README.md.
#
# Needs: flite (with the slt voice), sox.  Usage: bash tests/data/make_packing.sh
set -euo pipefail

OUT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

TEXTS=(
    "Seven purple elephants danced quietly."
    "Copper wires connect every northern tower."
    "Bright morning sunshine warmed frozen lakes."
    "Hungry pilots ordered spicy noodles tonight."
    "Old wooden bridges creak during storms."
    "Fresh orange juice tastes wonderful."
)

for i in "${!TEXTS[@]}"; do
    n=$((i + 1))
    flite -voice slt --setf duration_stretch=0.9 -t "${TEXTS[$i]}" -o "$WORK/$n.wav"
    # 16 kHz mono 16-bit, edge silence trimmed to 0.1 s on each side.
    sox "$WORK/$n.wav" -r 16000 -b 16 "$OUT_DIR/packing_$n.flac" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad 0.1 0.1
done
