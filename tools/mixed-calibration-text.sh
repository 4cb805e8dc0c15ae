#!/bin/sh
# Builds a mixed-domain calibration text (issue 14): WikiText-2's validation split (the default
# calibration) followed by SHARE times as many bytes of software documentation, the prose-and-code
# manual pages embedded in the Perl modules every Debian system of this kind ships
# (perl-modules, rendered by pod2text). Sections on licences, copyright and authors are
# dropped: licence prose is the second-domain *test* text (tools/second-domain-text.sh) and
# must stay unseen. Calibration samples windows uniformly over the result, so about 1/(1+SHARE) of
# them come from WikiText (tokens per byte differ a little between the domains).
# Usage: tools/mixed-calibration-text.sh [OUT [SHARE [CODE_SHARE]]]   (default /tmp/aqlm-mixed-calibration.txt, 1, 0);
# SHARE is the manuals' bytes per WikiText byte (1: half and half; 0.5: 2:1; 0.33: 3:1).
# CODE_SHARE appends that many bytes per WikiText byte of Python source: the standard library of
# Debian's python3 (/usr/lib/python3.N, the newest N; whole files, in the order of their names'
# sha256 so every part of the library is sampled; files above 100 kB, mostly data, skipped; lines
# naming a licence or copyright dropped; the last file cut at a line to fit).
# Prints OUT. Never commit the text itself.
set -eu
cd "$(dirname "$0")/.."
out=${1:-/tmp/aqlm-mixed-calibration.txt}
share=${2:-1}
code_share=${3:-0}
python3 -c 'import sys; float(sys.argv[1])' "$code_share" 2>/dev/null ||
    { echo "mixed-calibration-text: CODE_SHARE must be a number, not '$code_share'" >&2; exit 1; }
wiki=../shared/data/wikitext-2/wiki.valid.tokens
[ -r "$wiki" ] || { echo "mixed-calibration-text: $wiki not found" >&2; exit 1; }
command -v pod2text >/dev/null || { echo "mixed-calibration-text: pod2text not found (package perl)" >&2; exit 1; }
perl_dir=$(perl -MConfig -e 'print $Config{privlib}')
[ -d "$perl_dir" ] || { echo "mixed-calibration-text: $perl_dir not found (package perl-modules)" >&2; exit 1; }
tmp=$out.tmp.$$
cat "$wiki" > "$tmp"
budget=$(python3 -c 'import sys; print(int(int(sys.argv[1]) * float(sys.argv[2])))' "$(wc -c < "$wiki")" "$share") ||
    { echo "mixed-calibration-text: SHARE must be a number, not '$share'" >&2; exit 1; }
find "$perl_dir/" \( -name '*.pm' -o -name '*.pod' \) | LC_ALL=C sort | while read -r f; do
    pod2text "$f" 2>/dev/null || true
done | python3 -c '
import re, sys
budget = int(sys.argv[1])
keep, out = True, []
for raw in sys.stdin.buffer:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:   # a few manuals are Latin-1: skip their odd lines
        continue
    if re.match(r"^[A-Z][A-Z0-9 ,/&()-]+$", line.rstrip("\n")):   # a pod2text section heading
        keep = not re.search(r"LICEN[CS]E|COPYRIGHT|AUTHOR|DISCLAIMER|WARRANTY", line)
    if keep:
        out.append(line)
        budget -= len(raw)
        if budget <= 0:
            break
sys.stdout.write("".join(out))
' "$budget" >> "$tmp"
if [ "$code_share" != 0 ]; then
    stdlib=$(ls -d /usr/lib/python3.[0-9]* 2>/dev/null | sort -t. -k2 -n | tail -n 1)
    [ -n "$stdlib" ] && [ -r "$stdlib/os.py" ] ||
        { echo "mixed-calibration-text: no Python standard library in /usr/lib/python3.N (package libpython3-stdlib)" >&2; exit 1; }
    python3 - "$stdlib" "$(wc -c < "$wiki")" "$code_share" >> "$tmp" <<'PY' ||
import hashlib, os, re, sys
root, wiki_bytes, share = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
budget = int(wiki_bytes * share)
files = []
for d, dirs, names in os.walk(root):
    dirs[:] = sorted(x for x in dirs if x not in ("test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"))
    files += [os.path.relpath(os.path.join(d, n), root) for n in names if n.endswith(".py")]
out = []
for rel in sorted(files, key=lambda r: hashlib.sha256(r.encode()).hexdigest()):
    path = os.path.join(root, rel)
    if os.path.getsize(path) > 100_000:
        continue
    try:
        lines = open(path, encoding="utf-8").read().splitlines(True)
    except (UnicodeDecodeError, OSError):
        continue
    full = False
    for line in lines:
        if re.search(r"licen[cs]e|copyright", line, re.I):
            continue
        full = len(line.encode()) > budget
        if full:
            break
        out.append(line)
        budget -= len(line.encode())
    if full:
        break
sys.stdout.write("".join(out))
PY
        { echo "mixed-calibration-text: reading Python sources from $stdlib failed" >&2; exit 1; }
fi
mv "$tmp" "$out"
echo "$out"
