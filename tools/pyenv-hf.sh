#!/usr/bin/env bash
# Idempotent Python environments for the ecosystem cross-check (tools/hf_crosscheck.py,
# tools/hf_write_aqlm.py): the real client a user runs, pinned — torch 2.13.0+cpu, transformers,
# aqlm[cpu] 1.1.7, accelerate — plus gguf/safetensors/tokenizers for tools/gguf_to_hf.py.
# Two transformers generations read quantization_config differently (4.x compares parameter
# names, 5.x module names), so there is one venv per generation:
#   tools/pyenv-hf.sh 4   -> ${XDG_CACHE_HOME:-~/.cache}/aqlm/venv-hf4 (transformers 4.57.6)
#   tools/pyenv-hf.sh 5   -> ${XDG_CACHE_HOME:-~/.cache}/aqlm/venv-hf5 (transformers 5.25.0)
# Progress goes to stderr; the only line on stdout is the venv's python path.
set -euo pipefail

generation="${1:-5}"
case "$generation" in
  # Each transformers pins its own tokenizers range (4.57: < 0.23.1).
  4) transformers=transformers==4.57.6 tokenizers=tokenizers==0.22.2 ;;
  5) transformers=transformers==5.25.0 tokenizers=tokenizers==0.23.3 ;;
  *) echo "pyenv-hf: generation must be 4 or 5, got '$generation'" >&2; exit 2 ;;
esac
venv="${XDG_CACHE_HOME:-$HOME/.cache}/aqlm/venv-hf$generation"
packages=(torch==2.13.0+cpu "$transformers" "aqlm[cpu]==1.1.7" accelerate==1.16.0
          numpy==2.4.6 gguf==0.19.0 safetensors==0.8.0 "$tokenizers")
py="$venv/bin/python"
stamp="$venv/.aqlm-packages"
probe="import torch, transformers, aqlm, accelerate, numba, gguf, safetensors, tokenizers"

ready() {
  [ -x "$py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${packages[*]}" ] && "$py" -c "$probe" 2>/dev/null
}

mkdir -p "$(dirname "$venv")"
# Two callers at once (parallel test runs) must not build the same venv concurrently.
exec 9>"$venv.lock"
flock 9
if ! ready; then
  echo "pyenv-hf: creating $venv with ${packages[*]}" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$py" -m pip install --quiet "${packages[@]}" >&2
  "$py" -c "$probe"
  echo "${packages[*]}" > "$stamp"
fi
echo "$py"
