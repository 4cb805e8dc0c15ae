# Sourced by the test-text scripts: download_wheel NAME==VERSION downloads that PyPI wheel (no
# dependencies) into a temporary directory removed on exit and sets $wheel to its path, or prints
# one line naming the calling script and the wheel and exits 1.
download_wheel() {
    wheel_dir=$(mktemp -d)
    trap 'rm -rf "$wheel_dir"' EXIT
    python3 -m pip download --no-deps --quiet -d "$wheel_dir" "$1" ||
        { echo "$(basename "$0" .sh): pip download $1 failed" >&2; exit 1; }
    wheel=$(ls "$wheel_dir"/*.whl)
}
