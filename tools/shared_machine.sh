#!/usr/bin/env bash
# Throughput on a shared machine: each command alone and beside one busy-looping process pinned to
# core 1, in alternating rounds of one run; prints each figure and the loaded/idle ratio.
#
#   tools/shared_machine.sh [ROUNDS]        (default 2; run on an otherwise idle machine)
#
# The commands: `aqlm perplexity` on the first 100 chunks of WikiText-2 test (tokens_per_second) and a
# 2-block quantization of the default model with the fast preset (wall_seconds, as blocks per hour).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
aqlm=${AQLM:-.build/release/aqlm}
text=../shared/data/wikitext-2/wiki.test.raw
work=$(mktemp -d)
busy=""
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null; rm -rf "$work"' EXIT

start_busy() { taskset -c 1 sh -c 'while :; do :; done' & busy=$!; sleep 1; }
stop_busy() { kill "$busy"; wait "$busy" 2>/dev/null || true; busy=""; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

perplexity() { "$aqlm" perplexity --model smollm2-135m --text "$text" --chunks 100 --json 2>/dev/null | field tokens_per_second; }
quantize() {
  rm -rf "$work/q"
  "$aqlm" quantize --model smollm2-135m --blocks 2 --preset fast --out "$work/q" --json 2>/dev/null | field wall_seconds
}

for r in $(seq 1 "$rounds"); do
  for load in idle busy; do
    [ "$load" = busy ] && start_busy
    p=$(perplexity); q=$(quantize)
    [ "$load" = busy ] && stop_busy
    echo "round $r $load: perplexity $p tokens/s, 2-block quantize $q s"
    echo "$r $load $p $q" >> "$work/figures"
  done
done
python3 - "$work/figures" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
def med(load, col): return statistics.median(float(r[col]) for r in rows if r[1] == load)
p_idle, p_busy = med("idle", 2), med("busy", 2)
q_idle, q_busy = med("idle", 3), med("busy", 3)
print(f"perplexity: busy/idle throughput {p_busy:.1f}/{p_idle:.1f} = {p_busy / p_idle:.3f}x")
print(f"2-block quantize: busy/idle throughput {q_idle:.1f}/{q_busy:.1f} s = {q_idle / q_busy:.3f}x")
EOF
