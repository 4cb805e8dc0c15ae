#!/usr/bin/env bash
# The main job on the default model, end to end on a fresh machine: quantize SmolLM2-135M to
# 2x8 AQLM with the quick preset, then measure perplexity of the original and of the packed
# checkpoint on the first chunks of WikiText-2 test, and generate from the packed weights.
# The packed checkpoint lands in runs/ (git-ignored); an existing one is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
swift build -c release --product aqlm
aqlm=.build/release/aqlm
text=../shared/data/wikitext-2/wiki.test.raw
out=${AQLM_DEMO_OUT:-runs/smollm2-135m-2x8-fast}
mkdir -p "$(dirname "$out")"
if [ ! -d "$out" ]; then
  "$aqlm" quantize --model smollm2-135m --out "$out" --scheme 2x8 --preset fast
fi
"$aqlm" inspect "$out"
echo "== perplexity, original (first 8 chunks of 512)"
"$aqlm" perplexity --model smollm2-135m --text "$text" --chunks 8
echo "== perplexity, packed 2x8 (first 8 chunks of 512)"
"$aqlm" perplexity --model "$out" --text "$text" --chunks 8
echo "== greedy generation from the packed 2x8 weights"
"$aqlm" generate --model "$out" --prompt "Once upon a time, there was a little girl named" -n 40 --temp 0
