#!/usr/bin/env bash
# Idempotent Python environment for the cross-check tools (tools/gguf_to_hf.py): a venv at
# ${XDG_CACHE_HOME:-~/.cache}/aqlm/venv with pinned numpy, gguf, safetensors and tokenizers
# (no torch). Progress goes to stderr; the only line on stdout is the venv's python path.
set -euo pipefail

venv="${XDG_CACHE_HOME:-$HOME/.cache}/aqlm/venv"
packages=(numpy==2.4.6 gguf==0.19.0 safetensors==0.8.0 tokenizers==0.23.3)
py="$venv/bin/python"
stamp="$venv/.aqlm-packages"

ready() {
  [ -x "$py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${packages[*]}" ] &&
    "$py" -c "import numpy, gguf, safetensors, tokenizers" 2>/dev/null
}

mkdir -p "$(dirname "$venv")"
# Two callers at once (parallel test runs) must not build the same venv concurrently.
exec 9>"$venv.lock"
flock 9
if ! ready; then
  echo "pyenv: creating $venv with ${packages[*]}" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$py" -m pip install --quiet "${packages[@]}" >&2
  "$py" -c "import numpy, gguf, safetensors, tokenizers"
  echo "${packages[*]}" > "$stamp"
fi
echo "$py"
