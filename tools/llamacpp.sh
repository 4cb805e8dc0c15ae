#!/usr/bin/env bash
# llama.cpp for measuring side by side (never part of the product or its tests).
#
#   tools/llamacpp.sh build              builds llama.cpp from the PyPI sdist llama-cpp-python==0.3.36
#                                        (its vendor/llama.cpp is commit 0c1e57098, the one the reference
#                                        figures in ../shared/data/reference used), Release, native flags (no AMX),
#                                        cached outside the repository; prints the bin directory
#   tools/llamacpp.sh convert MODEL NAME writes NAME's F16, Q2_K and IQ2_XXS (importance matrix from the first
#                                        48 chunks of wiki.valid.tokens) next to the build; prints their paths
#
# Cache: ${XDG_CACHE_HOME:-~/.cache}/aqlm/llama.cpp (sources, build, converted models).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/aqlm/llama.cpp"
version=0.3.36
src="$cache/llama_cpp_python-$version/vendor/llama.cpp"
bin="$cache/build/bin"
calibration=../shared/data/wikitext-2/wiki.valid.tokens

die() { echo "llamacpp: $*" >&2; exit 1; }

build() {
  mkdir -p "$cache"
  exec 9>"$cache.lock"
  flock 9
  # GGML_NATIVE turns on ggml's AMX matmul where the CPU lists AMX; at this commit it executes `tilezero` with no tile
  # configuration loaded on some machines (seen on a Xeon listing amx_tile/amx_int8, where a plain AMX probe runs):
  # SIGILL in ggml_backend_amx_mul_mat for every K-quant model (Q2_K's fallback tensors), so it is left out.
  local flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-imatrix" ] && [ -x "$bin/llama-perplexity" ] \
     && [ "$(cat "$cache/build/.aqlm-flags" 2>/dev/null)" = "$flags" ]; then
    echo "$bin"; return
  fi
  command -v cmake >/dev/null || {
    echo "llamacpp: installing cmake (Debian package)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >&2
  }
  if [ ! -f "$src/CMakeLists.txt" ]; then
    echo "llamacpp: fetching the sdist llama-cpp-python==$version" >&2
    local tmp; tmp=$(mktemp -d)
    pip download --no-deps --no-binary :all: -q -d "$tmp" "llama-cpp-python==$version" >&2
    tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$cache"
    rm -rf "$tmp"
    [ -f "$src/CMakeLists.txt" ] || die "the sdist has no vendor/llama.cpp/CMakeLists.txt"
  fi
  echo "llamacpp: building (Release, GGML_NATIVE without AMX) in $cache/build" >&2
  cmake -S "$src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$cache/build" -j 2 --target llama-bench llama-quantize llama-imatrix llama-perplexity >&2
  echo "$flags" > "$cache/build/.aqlm-flags"
  echo "$bin"
}

convert() {
  local model=${1:?usage: tools/llamacpp.sh convert MODEL.gguf NAME} name=${2:?usage: tools/llamacpp.sh convert MODEL.gguf NAME}
  [ -f "$model" ] || die "$model: no such file"
  [ -f "$calibration" ] || die "$calibration: no such file (../shared beside the checkout?)"
  build >/dev/null
  local dir="$cache/models/$name"
  mkdir -p "$dir"
  if [ ! -f "$dir/f16.gguf" ]; then
    "$bin/llama-quantize" --allow-requantize "$model" "$dir/f16.gguf.tmp" F16 >"$dir/quantize-f16.log" 2>&1 \
      || die "llama-quantize F16 failed: $dir/quantize-f16.log"
    mv "$dir/f16.gguf.tmp" "$dir/f16.gguf"
  fi
  if [ ! -f "$dir/imatrix.gguf" ]; then
    echo "llamacpp: importance matrix from 48 chunks of $calibration" >&2
    "$bin/llama-imatrix" -m "$dir/f16.gguf" -f "$calibration" --chunks 48 -t 2 -o "$dir/imatrix.tmp.gguf" \
      >"$dir/imatrix.log" 2>&1 || die "llama-imatrix failed: $dir/imatrix.log"
    mv "$dir/imatrix.tmp.gguf" "$dir/imatrix.gguf"
  fi
  for type in Q2_K IQ2_XXS; do
    if [ ! -f "$dir/$type.gguf" ]; then
      local im=(); [ "$type" = IQ2_XXS ] && im=(--imatrix "$dir/imatrix.gguf")
      "$bin/llama-quantize" --allow-requantize "${im[@]}" "$dir/f16.gguf" "$dir/$type.tmp.gguf" "$type" \
        >"$dir/quantize-$type.log" 2>&1 || die "llama-quantize $type failed: $dir/quantize-$type.log"
      mv "$dir/$type.tmp.gguf" "$dir/$type.gguf"
    fi
  done
  echo "$dir/f16.gguf"; echo "$dir/Q2_K.gguf"; echo "$dir/IQ2_XXS.gguf"
}

case "${1:-}" in
  build) build ;;
  convert) shift; convert "$@" ;;
  *) die "usage: tools/llamacpp.sh build | convert MODEL.gguf NAME" ;;
esac
