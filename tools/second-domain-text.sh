#!/bin/sh
# Builds the second-domain test text of issue 14: English legal prose that calibration
# (WikiText) never sees, from the licence texts every Debian system ships in base-files
# (/usr/share/common-licenses). Near-duplicate versions (GPL-1/2, LGPL-2, LGPL-3's preamble
# to GPL-3, GFDL-1.2, MPL-1.1) are left out so no passage is scored twice.
# Usage: tools/second-domain-text.sh [OUT]   (default /tmp/aqlm-licenses.txt); prints OUT.
# Never commit the text itself.
set -eu
out=${1:-/tmp/aqlm-licenses.txt}
dir=/usr/share/common-licenses
files="GPL-3 LGPL-2.1 Apache-2.0 MPL-2.0 GFDL-1.3 Artistic CC0-1.0"
for f in $files; do
    [ -r "$dir/$f" ] || { echo "second-domain-text: $dir/$f not found (package base-files)" >&2; exit 1; }
done
tmp=$out.tmp.$$
: > "$tmp"
for f in $files; do cat "$dir/$f"; printf '\n\n'; done >> "$tmp"
mv "$tmp" "$out"
echo "$out"
