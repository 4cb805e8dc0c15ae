#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (apt packages, the default
# model), builds in release (the numeric tests are too slow in debug) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
swift build -c release --build-tests
swift test -c release --skip-build "$@"
