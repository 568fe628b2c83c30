#!/bin/sh
# Reproduces the figures of bench/NOTES.md on this machine: memory bandwidth,
# then bf16 and MLX-quantized Llama-shaped models (0.48B and 1.5B, random
# weights from `minerva synth`) and a gpt-oss-20b-shaped MXFP4-Q8 checkpoint.
# Usage: sh bench/run.sh [WORKDIR]   (needs ~25 GB of disk in WORKDIR)
set -e
cd "$(dirname "$0")/.."
W=${1:-/tmp/mnv-bench}
B=./build
mkdir -p "$W"
make build >/dev/null
cmake --build build --target bench_bw bench_matmul >/dev/null
echo "== memory bandwidth (streaming read)"
$B/bench_bw
for m in llama-0.5b llama-1.5b; do
    [ -d "$W/$m" ] || $B/minerva synth --config bench/configs/$m.json --out "$W/$m" --dtype bf16
    [ -d "$W/$m-q8" ] || $B/minerva convert "$W/$m" "$W/$m-q8" --q-bits 8 --q-group-size 64
    [ -d "$W/$m-q4" ] || $B/minerva convert "$W/$m" "$W/$m-q4" --q-bits 4 --q-group-size 64
    [ -d "$W/$m-mxfp4" ] || $B/minerva convert "$W/$m" "$W/$m-mxfp4" --q-mode mxfp4
    for v in "" -q8 -q4 -mxfp4; do
        echo "== $m$v"
        $B/minerva bench -m "$W/$m$v" -p 512 -n 64 --reps 3
    done
done
echo "== gpt-oss-20b (MXFP4-Q8 layout, random weights)"
[ -d "$W/gpt-oss-20b" ] || $B/minerva synth --config tests/fixtures/gpt-oss-20b/config.json --out "$W/gpt-oss-20b"
$B/minerva generate -m "$W/gpt-oss-20b" --prompt-ids "1 2 3" -n 1 --temp 0 --print-ids >/dev/null
$B/minerva bench -m "$W/gpt-oss-20b" -p 128 -n 32 --reps 2
