#!/bin/sh
# Builds a test text of source code, the domain a coder model is brought for and one no calibration
# text of this project contains (WikiText is prose, the Perl manuals are documentation): the Python
# sources of click 8.1.7 as shipped in its PyPI wheel, every click/*.py in path order, each after a
# "# file: PATH" line. Needs pip and PyPI.
# Usage: tools/code-domain-text.sh [OUT]   (default /tmp/aqlm-code.txt); prints OUT.
# A test set only: never calibrate or pick settings on it. Never commit the text itself.
set -eu
. "$(dirname "$0")/download-wheel.sh"
out=${1:-/tmp/aqlm-code.txt}
download_wheel click==8.1.7
python3 - "$wheel" "$out.tmp.$$" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = sorted(n for n in z.namelist() if n.startswith("click/") and n.endswith(".py"))
    parts = [f"# file: {n}\n" + z.read(n).decode("utf-8").rstrip() + "\n" for n in names]
open(out, "w", encoding="utf-8").write("\n".join(parts))
PY
mv "$out.tmp.$$" "$out"
echo "$out"
