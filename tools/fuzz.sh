#!/usr/bin/env bash
# Fuzzes the file parsers with libFuzzer + AddressSanitizer: the harnesses of Fuzz/ (a package of
# their own, so the product build and its flags stay untouched) are built into .build-fuzz and
# run one after the other.
#
#   bash tools/fuzz.sh                      # smoke run for CI: every harness 15 s (under 2 min in all)
#   bash tools/fuzz.sh --time 900           # every harness 900 s
#   bash tools/fuzz.sh --time 900 FuzzGGUF  # only the named harnesses
#   bash tools/fuzz.sh --runs 2000000 FuzzHFConfig   # a fixed number of executions instead
#   bash tools/fuzz.sh --no-asan --time 900  # without AddressSanitizer (about twice the executions;
#                                            # built into .build-fuzz-noasan)
#
# Harnesses: FuzzGGUF (GGUF reader and model load), FuzzSafeTensors (safetensors header and
# tensors), FuzzHFConfig (JSON + config.json), FuzzTokenizerJSON (tokenizer.json + BPE tables),
# FuzzTokenize (SmolLM2's tokenizer on arbitrary bytes; needs tools/setup.sh's model),
# FuzzPackedCheckpoint (a packed checkpoint directory with one file replaced by the input).
#
# Seeds: each harness writes its own from small files the project's writers make (TinyModel's
# GGUF, Hugging Face directory, packed checkpoint) into .build-fuzz/seeds/NAME; Fuzz/Seeds/NAME
# holds committed ones (real-world configs, texts). The growing corpus is .build-fuzz/corpus/NAME.
# Limits per input: -timeout 10 s (a hang), -rss_limit_mb / -malloc_limit_mb 2048 (an
# out-of-memory, including one allocation over the limit). The first crash, hang or
# out-of-memory stops the script with exit 1; its input is saved as
# .build-fuzz/findings/NAME/{crash,timeout,oom}-*, to reproduce with
# `.build-fuzz/release/NAME .build-fuzz/findings/NAME/crash-...`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=15
asan=1
runs=""
harnesses=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --no-asan) asan=0; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) harnesses+=("$1"); shift ;;
  esac
done
all=(FuzzGGUF FuzzSafeTensors FuzzHFConfig FuzzTokenizerJSON FuzzTokenize FuzzPackedCheckpoint)
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")

# libFuzzer's main and coverage (edges, comparisons for its value profile) plus AddressSanitizer;
# dead stripping off, since it drops the coverage counters' registration.
scratch_path=.build-fuzz sanitizers=(--sanitize=fuzzer --sanitize=address)
[ $asan = 1 ] || { scratch_path=.build-fuzz-noasan; sanitizers=(--sanitize=fuzzer); }
mkdir -p "$scratch_path"
if ! swift build -c release --package-path Fuzz --scratch-path "$scratch_path" "${sanitizers[@]}" --disable-dead-strip \
  -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table >"$scratch_path/build.log" 2>&1; then
  grep -E "error" "$scratch_path/build.log" >&2 || tail -n 20 "$scratch_path/build.log" >&2
  echo "fuzz.sh: building the harnesses failed (log: $scratch_path/build.log)" >&2
  exit 2
fi
bin="$scratch_path/release"
for h in "${harnesses[@]}"; do
  [ -x "$bin/$h" ] || { echo "fuzz.sh: $bin/$h was not built (unknown harness or build error)" >&2; exit 2; }
done

# Input files the harnesses write go to tmpfs when there is one.
tmp_root=/dev/shm; [ -d "$tmp_root" ] && [ -w "$tmp_root" ] || tmp_root="${TMPDIR:-/tmp}"
export AQLM_FUZZ_SCRATCH; AQLM_FUZZ_SCRATCH=$(mktemp -d "$tmp_root/aqlm-fuzz.XXXXXX")
trap 'rm -rf "$AQLM_FUZZ_SCRATCH"' EXIT
# Leak checking is off: the Swift runtime's caches (metadata, lazy globals) are allocated once and
# never freed, which LeakSanitizer would report for the first input that creates them.
export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"
# libFuzzer reports a crash itself; Swift's backtracer would only add a second report.
export SWIFT_BACKTRACE="enable=no"

printf '%-22s %12s %8s %14s %10s\n' harness executions seconds corpus_files corpus_kb
status=0
for h in "${harnesses[@]}"; do
  # Corpora, seeds, findings and logs stay in .build-fuzz whichever build runs.
  seeds=".build-fuzz/seeds/$h" corpus=".build-fuzz/corpus/$h" findings=".build-fuzz/findings/$h"
  rm -rf "$seeds"
  mkdir -p "$corpus" "$findings"
  AQLM_FUZZ_WRITE_SEEDS="$seeds" "$bin/$h" >/dev/null
  dirs=("$corpus" "$seeds")
  [ -d "Fuzz/Seeds/$h" ] && dirs+=("Fuzz/Seeds/$h")
  limit=(-max_total_time="$seconds"); [ -n "$runs" ] && limit=(-runs="$runs")
  log=".build-fuzz/$h.log"
  start=$(date +%s)
  set +e
  "$bin/$h" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$findings/" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  files=$(find "$corpus" -type f | wc -l)
  kb=$(du -sk "$corpus" | cut -f1)
  printf '%-22s %12s %8s %14s %10s\n' "$h" "${execs:-?}" "$elapsed" "$files" "$kb"
  if [ $rc -ne 0 ]; then
    echo "fuzz.sh: $h FAILED (exit $rc); log: $log; inputs: $findings" >&2
    grep -E "ERROR|Fatal error|fuzz property|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -n 20 >&2 || true
    status=1
    break
  fi
done
exit $status
