#!/usr/bin/env bash
# Renders an SVG (e.g. a sweep's tradeoff.svg) in headless Chromium to a PNG, the check that
# the plot opens in a real browser and shows every point. Installs Debian's chromium if absent.
#
#   tools/screenshot_svg.sh SWEEP_DIR/tradeoff.svg [OUT.png]     (default: next to the SVG)
set -euo pipefail

svg=${1:?usage: tools/screenshot_svg.sh FILE.svg [OUT.png]}
[ -f "$svg" ] || { echo "screenshot_svg: $svg: no such file" >&2; exit 1; }
png=${2:-${svg%.svg}.png}
svg=$(realpath "$svg")
png=$(realpath -m "$png")

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    echo "screenshot_svg: installing chromium (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium >&2
    browser=$(command -v chromium)
fi

# The canvas size the SVG declares (width="..." height="..." on the root element).
width=$(grep -o '<svg[^>]*' "$svg" | grep -o 'width="[0-9.]*"' | head -1 | grep -o '[0-9]*' | head -1)
height=$(grep -o '<svg[^>]*' "$svg" | grep -o 'height="[0-9.]*"' | head -1 | grep -o '[0-9]*' | head -1)

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size="${width:-1000},${height:-700}" --screenshot="$png" "file://$svg" >&2 2>/dev/null
[ -s "$png" ] || { echo "screenshot_svg: chromium wrote no $png" >&2; exit 1; }
echo "$png"
