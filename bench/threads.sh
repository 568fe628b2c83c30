#!/bin/sh
# Thread-pool figures: stories260K (200 greedy tokens) at --threads 1, 2, 64
# and 1000 (counts above the CPUs this process may use are clamped), and
# decode of a 0.48B bf16 Llama shape alone and beside one busy-loop process.
# Usage: sh bench/threads.sh [WORKDIR] [REPS]   (WORKDIR holds the 0.48B model, ~1 GB)
set -e
cd "$(dirname "$0")/.."
W=${1:-/tmp/mnv-bench}
R=${2:-3}
B=${MINERVA_BUILD:-./build}
[ -x "$B/minerva" ] || make build >/dev/null
mkdir -p "$W"
$B/minerva --version | tail -n 1
echo "== stories260K, 200 tokens: seconds of decoding per run"
for t in 1 2 64 1000; do
    line="threads $t:"
    for r in $(seq "$R"); do
        v=$($B/minerva generate -n 200 --temp 0 -t "$t" -p "Once upon a time" 2>&1 >/dev/null |
            sed -n 's/^generated: *[0-9]* tokens, \([0-9.]*\) s.*/\1/p')
        line="$line ${v}s"
    done
    echo "$line"
done
M="$W/llama-0.5b"
[ -d "$M" ] || $B/minerva synth --config bench/configs/llama-0.5b.json --out "$M" --dtype bf16 >/dev/null
decode() { $B/minerva bench -m "$M" -p 0 -n 32 --reps 1 ${THREADS:+-t $THREADS} | sed -n 's/^tg32 *\([0-9.]*\) tok\/s/\1/p'; }
echo "== 0.48B bf16 decode (tok/s), alone then beside a busy loop, $R times"
for r in $(seq "$R"); do
    a=$(decode)
    sh -c 'while :; do :; done' &
    spin=$!
    b=$(decode)
    kill "$spin"
    echo "alone $a  beside a busy loop $b"
done
