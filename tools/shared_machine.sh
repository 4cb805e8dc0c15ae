#!/usr/bin/env bash
# Throughput on a shared machine: each command alone and beside one busy-looping process pinned to
# core 1, in alternating rounds of one run; prints each figure, the loaded/idle ratios and, when an
# older binary is given, the new/old ratio of the idle figures (speed when idle must not change).
#
#   tools/shared_machine.sh [ROUNDS]        (default 2; run on an otherwise idle machine)
#   AQLM=path/to/aqlm          the binary under test (default .build/release/aqlm)
#   AQLM_OLD=path/to/aqlm      an older binary, run under OLD_LOADS in the same rounds (optional)
#   LOADS="idle busy niced"    the new binary's loads (default "idle busy"); niced: the loop runs under
#                              `nice -n 19`, which a foreground run should ignore
#   OLD_LOADS="idle niced"     the older binary's loads (default "idle")
#
# The commands: `aqlm perplexity` on the first 100 chunks of WikiText-2 test (tokens_per_second) and a
# 2-block quantization of the default model with the fast preset (wall_seconds). Both run without
# --threads, so the thread count follows the free cores; "switches" counts the changes it made
# (AQLM_THREADS_LOG lines on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
aqlm=${AQLM:-.build/release/aqlm}
old=${AQLM_OLD:-}
text=../shared/data/wikitext-2/wiki.test.raw
work=$(mktemp -d)
busy=""
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null; rm -rf "$work"' EXIT

start_busy() { taskset -c 1 ${1:-} sh -c 'while :; do :; done' & busy=$!; sleep 1; }
stop_busy() { kill "$busy"; wait "$busy" 2>/dev/null || true; busy=""; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
switches() { grep -c '^threads:' "$work/stderr" || true; }

# perplexity BINARY -> "tokens/s switches"
perplexity() {
  local p
  p=$(AQLM_THREADS_LOG=1 "$1" perplexity --model smollm2-135m --text "$text" --chunks 100 --json 2>"$work/stderr" | field tokens_per_second)
  echo "$p $(switches)"
}
# quantize BINARY -> "seconds switches"
quantize() {
  local q
  rm -rf "$work/q"
  q=$(AQLM_THREADS_LOG=1 "$1" quantize --model smollm2-135m --blocks 2 --preset fast --out "$work/q" --json 2>"$work/stderr" | field wall_seconds)
  echo "$q $(switches)"
}

for r in $(seq 1 "$rounds"); do
  # Alternate the order between rounds so a drift of the machine does not favour one run.
  runs=""
  [ -n "$old" ] && for l in ${OLD_LOADS:-idle}; do runs="$runs old:$l"; done
  for l in ${LOADS:-idle busy}; do runs="$runs new:$l"; done
  [ $((r % 2)) = 0 ] && runs=$(echo "$runs" | tr ' ' '\n' | tac | tr '\n' ' ')
  for run in $runs; do
    bin=${run%%:*} load=${run##*:}
    binary=$aqlm; [ "$bin" = old ] && binary=$old
    [ "$load" = busy ] && start_busy
    [ "$load" = niced ] && start_busy "nice -n 19"
    read -r p ps < <(perplexity "$binary")
    read -r q qs < <(quantize "$binary")
    [ "$load" != idle ] && stop_busy
    echo "round $r $bin $load: perplexity $p tokens/s ($ps switches), 2-block quantize $q s ($qs switches)"
    echo "$r $bin $load $p $q" >> "$work/figures"
  done
done
python3 - "$work/figures" <<'EOF'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
def med(binary, load, col):
    values = [float(r[col]) for r in rows if r[1] == binary and r[2] == load]
    return statistics.median(values) if values else None
p_idle, q_idle = med("new", "idle", 3), med("new", "idle", 4)
for binary in ("new", "old"):
    for load, bar in (("busy", " (bar >= 0.45x)"), ("niced", " (nice -n 19 loop: 1.0 = ignored)")):
        p, q, pi, qi = med(binary, load, 3), med(binary, load, 4), med(binary, "idle", 3), med(binary, "idle", 4)
        if p is None or pi is None:
            continue
        print(f"{binary} perplexity: {load}/idle throughput {p:.1f}/{pi:.1f} tokens/s = {p / pi:.3f}x{bar}")
        print(f"{binary} 2-block quantize: {load}/idle throughput {qi:.1f}/{q:.1f} s = {qi / q:.3f}x{bar}")
p_old, q_old = med("old", "idle", 3), med("old", "idle", 4)
if p_old is not None:
    print(f"idle, new/old: perplexity {p_idle:.1f}/{p_old:.1f} tokens/s = {p_idle / p_old:.3f}x, "
          f"2-block quantize {q_old:.1f}/{q_idle:.1f} s = {q_old / q_idle:.3f}x (1.0 = unchanged)")
EOF
