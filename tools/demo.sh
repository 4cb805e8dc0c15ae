#!/usr/bin/env bash
# The main job on the default model, end to end on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
swift build -c release --product aqlm
aqlm=.build/release/aqlm
text=../shared/data/wikitext-2/wiki.test.raw
"$aqlm" perplexity --model smollm2-135m --text "$text" --chunks 8
"$aqlm" generate --model smollm2-135m --prompt "Once upon a time, there was a little girl named" -n 40 --temp 0
