#!/usr/bin/env python3
"""Our perplexity and KL divergence against llama.cpp's, on one text, in one run (standard library only).

    tools/sidebyside_ppl.py --text FILE [--chunks N] --base-ours MODEL --base-llama F16.gguf \
        --ours NAME=MODEL [--ours ...] --llama NAME=FILE.gguf [--llama ...] [--json OUT]

Quality comparisons with another tool count only when both sides ran from one script on the same
text and protocol (ctx 512, llama.cpp's: the second half of each chunk scored). Each side's KL
divergence is taken against its own full-precision run, saved first in this run: ours through
`aqlm perplexity --save-logits` of --base-ours (top-k log-probabilities), llama.cpp's through
`llama-perplexity --kl-divergence-base` of --base-llama (its F16 conversion of the same model).
Both bases' perplexities are printed, so the two references can be seen to agree. Bits per weight of
the block linears (what each format spends on them: codebooks, scales, block scales included) come
from `aqlm inspect --json` for both tools' files. Timing is not compared here
(tools/sidebyside.py does that, alternating). llama.cpp comes from `tools/llamacpp.sh build`.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from sidebyside import named  # NAME=PATH arguments, as tools/sidebyside.py takes them


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"sidebyside_ppl: {' '.join(cmd[:3])} ... failed ({r.returncode}): {tail}")
    return r


def ours(aqlm, model, text, chunks, threads, save=None, base=None):
    cmd = [aqlm, "perplexity", "--model", model, "--text", text, "--head", "f32", "--json", "--threads", str(threads)]
    if chunks:
        cmd += ["--chunks", str(chunks)]
    if save:
        cmd += ["--save-logits", save]
    if base:
        cmd += ["--kl-base", base]
    started = time.time()
    j = json.loads(run(cmd).stdout)
    return {"ppl": j["ppl"], "ppl_stderr": j["ppl_stderr"], "kld_mean": j.get("kld_mean"),
            "top1_agreement": j.get("top1_agreement"), "scored_tokens": j["scored_tokens"],
            "wall_seconds": time.time() - started}


def ours_bits(aqlm, model):
    """Bits per weight of the block linears (codebooks and scales, or GGUF block scales, included), read by
    `aqlm inspect` for either tool's files, so both columns count the same tensors."""
    try:
        j = json.loads(run([aqlm, "inspect", model, "--json"]).stdout)
    except (SystemExit, json.JSONDecodeError):
        return None
    return j.get("block_linear_bits_per_weight") or j.get("bits_per_weight")


def number(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def theirs(perplexity, model, text, chunks, threads, save=None, base=None):
    cmd = [perplexity, "-m", model, "-f", text, "-c", "512", "-t", str(threads)]
    if chunks:
        cmd += ["--chunks", str(chunks)]
    if save:
        cmd += ["--kl-divergence-base", save]
    if base:
        cmd += ["--kl-divergence-base", base, "--kl-divergence"]
    started = time.time()
    r = run(cmd)
    log = r.stdout + r.stderr
    if base:
        ppl = number(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", log)
        err = number(r"Mean PPL\(Q\)\s*:\s*[0-9.]+\s*±\s*([0-9.]+)", log)
    else:
        ppl = number(r"Final estimate: PPL = ([0-9.]+)", log)
        err = number(r"Final estimate: PPL = [0-9.]+ \+/- ([0-9.]+)", log)
    if ppl is None:
        sys.exit(f"sidebyside_ppl: no perplexity in llama-perplexity's output for {model}")
    same_top = number(r"Same top p:\s*([0-9.]+)", log)
    return {"ppl": ppl, "ppl_stderr": err, "kld_mean": number(r"Mean\s+KLD:\s*([0-9.]+)", log),
            "top1_agreement": same_top / 100 if same_top is not None else None,
            "wall_seconds": time.time() - started}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="text file to score")
    ap.add_argument("--chunks", type=int, default=0, help="first N chunks of 512 tokens (0: the whole text)")
    ap.add_argument("--base-ours", required=True, help="full-precision model for our KL divergence (path or alias)")
    ap.add_argument("--base-llama", required=True, help="llama.cpp's F16 GGUF of the same model")
    ap.add_argument("--ours", action="append", default=[], help="NAME=MODEL scored by aqlm perplexity (repeatable)")
    ap.add_argument("--llama", action="append", default=[], help="NAME=FILE.gguf scored by llama-perplexity (repeatable)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both tools")
    ap.add_argument("--aqlm", default=".build/release/aqlm", help="the aqlm binary")
    ap.add_argument("--llama-bin", default=os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                       "aqlm/llama.cpp/build/bin"), help="llama.cpp's bin directory")
    ap.add_argument("--json", help="also write every figure to this file")
    a = ap.parse_args()
    perplexity = os.path.join(a.llama_bin, "llama-perplexity")
    for path, what in [(a.text, "--text"), (a.aqlm, "--aqlm"), (perplexity, "--llama-bin"), (a.base_llama, "--base-llama")]:
        if not os.path.exists(path):
            sys.exit(f"sidebyside_ppl: {what} {path}: no such file")
    mine, other = named(a.ours, "ours"), named(a.llama, "llama")
    for _, path in other:
        if not os.path.exists(path):
            sys.exit(f"sidebyside_ppl: --llama {path}: no such file")

    rows = []
    with tempfile.TemporaryDirectory(prefix="sidebyside-ppl-") as tmp:
        ours_base, theirs_base = os.path.join(tmp, "ours.topk"), os.path.join(tmp, "llama.kld")
        print(f"[ours] base {a.base_ours}", file=sys.stderr, flush=True)
        rows.append({"tool": "aqlm", "name": "base", "model": a.base_ours,
                     **ours(a.aqlm, a.base_ours, a.text, a.chunks, a.threads, save=ours_base)})
        print(f"[llama.cpp] base {a.base_llama}", file=sys.stderr, flush=True)
        rows.append({"tool": "llama.cpp", "name": "base", "model": a.base_llama,
                     **theirs(perplexity, a.base_llama, a.text, a.chunks, a.threads, save=theirs_base)})
        # Interleaved so that neither tool's models all run at the end of a long job.
        for i in range(max(len(mine), len(other))):
            if i < len(mine):
                name, model = mine[i]
                print(f"[ours] {name}", file=sys.stderr, flush=True)
                rows.append({"tool": "aqlm", "name": name, "model": model, "bits_per_weight": ours_bits(a.aqlm, model),
                             **ours(a.aqlm, model, a.text, a.chunks, a.threads, base=ours_base)})
            if i < len(other):
                name, model = other[i]
                print(f"[llama.cpp] {name}", file=sys.stderr, flush=True)
                rows.append({"tool": "llama.cpp", "name": name, "model": model, "bits_per_weight": ours_bits(a.aqlm, model),
                             **theirs(perplexity, model, a.text, a.chunks, a.threads, base=theirs_base)})

    def f(v, fmt):
        return "" if v is None else format(v, fmt)
    print(f"text {a.text}, {'first ' + str(a.chunks) if a.chunks else 'all'} chunks of 512, llama.cpp protocol")
    print("| tool | name | bits/weight | PPL | ± | KLD vs own base | top-1 agreement | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['tool']} | {r['name']} | {f(r.get('bits_per_weight'), '.3f')} | {r['ppl']:.4f} | {f(r['ppl_stderr'], '.4f')} "
              f"| {f(r['kld_mean'], '.4f')} | {f(r['top1_agreement'], '.3f')} | {r['wall_seconds']:.0f} |")
    if a.json:
        with open(a.json + ".tmp", "w") as out:
            json.dump({"text": a.text, "chunks": a.chunks, "rows": rows}, out, indent=1)
        os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
