#!/bin/sh
# Builds a mixed-domain calibration text (issue 14): WikiText-2's validation split (the default
# calibration) followed by SHARE times as many bytes of software documentation, the prose-and-code
# manual pages embedded in the Perl modules every Debian system of this kind ships
# (perl-modules, rendered by pod2text). Sections on licences, copyright and authors are
# dropped: licence prose is the second-domain *test* text (tools/second-domain-text.sh) and
# must stay unseen. Calibration samples windows uniformly over the result, so about 1/(1+SHARE) of
# them come from WikiText (tokens per byte differ a little between the domains).
# Usage: tools/mixed-calibration-text.sh [OUT [SHARE]]   (default /tmp/aqlm-mixed-calibration.txt, 1);
# SHARE is the manuals' bytes per WikiText byte (1: half and half; 0.5: 2:1; 0.33: 3:1).
# Prints OUT. Never commit the text itself.
set -eu
cd "$(dirname "$0")/.."
out=${1:-/tmp/aqlm-mixed-calibration.txt}
share=${2:-1}
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
mv "$tmp" "$out"
echo "$out"
