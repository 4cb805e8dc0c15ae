#!/usr/bin/env python3
"""Our packed decode/prefill against llama.cpp's, in alternating rounds of one run (standard library only).

    tools/sidebyside.py --ours NAME=MODEL [--ours ...] --llama NAME=FILE.gguf [--llama ...] [--rounds 3]

Each round runs every model once, ours through `aqlm bench --repeat 1 --no-kernels --json` (its own
process) and llama.cpp's through `llama-bench -t 2 -p 128 -n 64 -r 2 -o json`, in an order that
alternates between rounds so that neither side always runs second. It prints every round, then
each of ours against each of theirs: the ratio of medians and the per-round ratios (speed figures
drift between days on this machine kind; only ratios from one run are claims). `--json FILE` also
writes every figure. llama.cpp comes from `tools/llamacpp.sh build` (its bin directory is found
there unless --llama-bench is given).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return json.loads(out.stdout)


def ours(aqlm, model, threads, prompt, decode, kv_cache):
    r = run_json([aqlm, "bench", "--model", model, "--repeat", "1", "--no-kernels", "--json", "--threads", str(threads),
                  "--prompt-tokens", str(prompt), "--decode-tokens", str(decode), "--kv-cache", kv_cache])
    return {"prefill": r["prefill_tokens_per_second"], "decode": r["decode_tokens_per_second"],
            "streaming_gb_per_second": r["machine"]["streaming_gb_per_second"]}


def theirs(llama_bench, model, threads, prompt, decode):
    r = run_json([llama_bench, "-m", model, "-t", str(threads), "-p", str(prompt), "-n", str(decode), "-r", "2", "-o", "json"])
    out = {}
    for test in r:
        if test.get("n_prompt", 0) > 0 and test.get("n_gen", 0) == 0:
            out["prefill"] = test["avg_ts"]
        elif test.get("n_gen", 0) > 0 and test.get("n_prompt", 0) == 0:
            out["decode"] = test["avg_ts"]
    if "prefill" not in out or "decode" not in out:
        sys.exit(f"sidebyside: llama-bench on {model} reported no pp/tg figures")
    return out


def named(pairs, what):
    out = []
    for p in pairs:
        if "=" not in p:
            sys.exit(f"sidebyside: --{what} {p}: expected NAME=PATH")
        name, path = p.split("=", 1)
        out.append((name, path))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", action="append", default=[], help="NAME=MODEL run by aqlm bench (repeatable)")
    ap.add_argument("--llama", action="append", default=[], help="NAME=FILE.gguf run by llama-bench (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="threads on both sides (default 2)")
    ap.add_argument("--prompt-tokens", type=int, default=128, help="prefill length (default 128)")
    ap.add_argument("--decode-tokens", type=int, default=64, help="decode steps (default 64)")
    ap.add_argument("--aqlm", default=".build/release/aqlm", help="the aqlm executable")
    ap.add_argument("--kv-cache", action="append", default=[],
                    help="NAME=f16|f32: key/value cache of our model NAME (default f32; llama.cpp's default is f16); "
                         "the same model may be given twice under two names to compare both")
    ap.add_argument("--llama-bench", help="llama-bench executable (default: tools/llamacpp.sh build's)")
    ap.add_argument("--json", dest="json_out", help="also write every figure to this file")
    a = ap.parse_args()
    mine, other = named(a.ours, "ours"), named(a.llama, "llama")
    caches = dict(named(a.kv_cache, "kv-cache"))
    for name, precision in caches.items():
        if name not in dict(mine) or precision not in ("f16", "f32"):
            sys.exit(f"sidebyside: --kv-cache {name}={precision}: expected the NAME of an --ours and f16 or f32")
    if not mine or not other:
        sys.exit("sidebyside: give at least one --ours and one --llama")
    for _, path in other:
        if not os.path.isfile(path):
            sys.exit(f"sidebyside: {path}: no such file")
    llama_bench = a.llama_bench or os.path.join(
        subprocess.run(["bash", os.path.join(os.path.dirname(__file__), "llamacpp.sh"), "build"],
                       check=True, stdout=subprocess.PIPE, text=True).stdout.strip(), "llama-bench")

    jobs = [("ours", n, p) for n, p in mine] + [("llama.cpp", n, p) for n, p in other]
    rounds = []
    started = time.time()
    for r in range(a.rounds):
        order = jobs if r % 2 == 0 else list(reversed(jobs))
        figures = {}
        for side, name, path in order:
            if side == "ours":
                f = ours(a.aqlm, path, a.threads, a.prompt_tokens, a.decode_tokens, caches.get(name, "f32"))
            else:
                f = theirs(llama_bench, path, a.threads, a.prompt_tokens, a.decode_tokens)
            figures[name] = f
            print(f"round {r + 1}/{a.rounds} {side:9s} {name:14s} prefill {f['prefill']:8.1f} tok/s  decode {f['decode']:7.1f} tok/s",
                  flush=True)
        rounds.append(figures)

    print(f"\n{a.rounds} alternating rounds, {a.threads} threads, pp{a.prompt_tokens} / tg{a.decode_tokens}, "
          f"{time.time() - started:.0f} s")
    summary = []
    for mn, _ in mine:
        for tn, _ in other:
            for what in ("decode", "prefill"):
                per_round = [rd[mn][what] / rd[tn][what] for rd in rounds]
                med_ours = statistics.median(rd[mn][what] for rd in rounds)
                med_theirs = statistics.median(rd[tn][what] for rd in rounds)
                summary.append({"ours": mn, "theirs": tn, "what": what, "ours_median": med_ours,
                                "theirs_median": med_theirs, "ratio_of_medians": med_ours / med_theirs,
                                "per_round": per_round})
                print(f"{mn} / {tn} {what:7s}: {med_ours:7.1f} / {med_theirs:7.1f} = {med_ours / med_theirs:.3f}x "
                      f"(rounds: {', '.join(f'{x:.3f}' for x in per_round)})")
    if a.json_out:
        with open(a.json_out + ".tmp", "w") as f:
            json.dump({"rounds": rounds, "ratios": summary, "threads": a.threads,
                       "prompt_tokens": a.prompt_tokens, "decode_tokens": a.decode_tokens}, f, indent=1)
        os.replace(a.json_out + ".tmp", a.json_out)


if __name__ == "__main__":
    main()
