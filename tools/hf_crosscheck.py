#!/usr/bin/env python3
"""Cross-checks a packed AQLM checkpoint against the real client: transformers + the aqlm package.

Loads DIR with AutoModelForCausalLM (any missing, unexpected or newly initialised tensor is an
error: transformers 4.x would otherwise run a randomly initialised layer without complaint),
replaces every aqlm QuantizedLinear by a plain nn.Linear holding aqlm's own dequantization of its
codes (`aqlm.utils._dequantize_weight` of `unpack_int_data(codes)`: aqlm's CPU kernel races on its
output and is not trusted for logits), then computes in float32:

  - perplexity over the first CHUNKS chunks of CTX tokens of TEXT, llama.cpp's protocol exactly as
    `aqlm perplexity` runs it (Sources/Evaluation/PerplexityProtocol.swift): the text tokenized
    whole by the checkpoint's own tokenizer (AutoTokenizer), BOS written over each chunk's first
    token when the tokenizer adds BOS, the logits at positions ctx/2 ..< ctx-1 scored;
  - TOKENS greedy tokens after PROMPT (stopping at EOS, as `aqlm generate` does);

and compares them with `aqlm perplexity --json` and `aqlm generate --json` on the same directory
(`--head f32`: the head exactly as stored). Prints one JSON object; exits 1 when the relative PPL
difference exceeds --tolerance or the greedy tokens differ, 2 when the checkpoint does not load.

Usage: hf_crosscheck.py DIR --aqlm .build/release/aqlm --text wiki.test.raw [--chunks 4]
       hf_crosscheck.py DIR --native-decode 32     (item 4: aqlm's own CPU kernel, timed, twice)
Needs: tools/pyenv-hf.sh 4|5 (torch, transformers, aqlm[cpu], accelerate).
"""
import argparse
import importlib.metadata
import json
import math
import subprocess
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from aqlm import QuantizedLinear
from aqlm.utils import _dequantize_weight, unpack_int_data

AQLM_VERSION = importlib.metadata.version("aqlm")


def fail(message, code=2):
    print(f"hf_crosscheck: {message}", file=sys.stderr)
    sys.exit(code)


def load(directory, dtype):
    """The model as a user gets it; loading problems are fatal (they are what this tool is for)."""
    try:  # `dtype` (4.56+; `torch_dtype` before)
        model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True, dtype=dtype)
    except Exception as e:  # the message is the finding
        fail(f"{directory}: transformers {transformers.__version__} cannot load it: {type(e).__name__}: {e}")
    problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        fail(f"{directory}: transformers {transformers.__version__} loaded it with {json.dumps(problems)[:2000]}")
    return model.eval()


def dequantized_linear(q):
    """nn.Linear with the weight aqlm itself reconstructs from the stored codes."""
    codes = unpack_int_data(q.codes.data, q.nbits_per_codebook)
    weight = _dequantize_weight(codes, q.codebooks.data.float(), q.scales.data.float())
    linear = torch.nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, dtype=torch.float32)
    linear.weight.data.copy_(weight)
    if q.bias is not None:
        linear.bias.data.copy_(q.bias.data.float())
    return linear


def replace_quantized(model):
    """Every QuantizedLinear becomes its dequantized nn.Linear; returns their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, dequantized_linear(getattr(parent, child)))
    return names


def adds_bos(tokenizer):
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id


@torch.no_grad()
def perplexity(model, ids, bos, ctx, chunks):
    n = min(chunks, len(ids) // ctx)
    first = ctx // 2
    total, count = 0.0, 0
    for i in range(n):
        chunk = list(ids[i * ctx:(i + 1) * ctx])
        if bos is not None:
            chunk[0] = bos
        logits = model(torch.tensor([chunk])).logits[0].double()
        logp = torch.log_softmax(logits[first:ctx - 1], dim=-1)
        target = torch.tensor(chunk[first + 1:ctx])
        total -= logp.gather(1, target[:, None]).sum().item()
        count += ctx - 1 - first
    return math.exp(total / count), n


@torch.no_grad()
def greedy(model, prompt_ids, steps, eos):
    ids, out = list(prompt_ids), []
    for _ in range(steps):
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def run_json(command):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@torch.no_grad()
def native_decode(directory, steps, prompt):
    """Item 4's client side: transformers + aqlm's default CPU kernel (numba for 8-bit codes),
    greedy decode with the KV cache, timed; run twice to see whether the tokens repeat."""
    model = load(directory, torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    enc = tokenizer(prompt, return_tensors="pt")
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        seconds = time.perf_counter() - start
        runs.append({"ids": out[0, enc["input_ids"].shape[1]:].tolist(), "seconds": seconds,
                     "tokens_per_second": steps / seconds})
    return {"transformers": transformers.__version__, "aqlm": AQLM_VERSION, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "steps": steps, "runs": runs,
            "deterministic": runs[0]["ids"] == runs[1]["ids"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("directory")
    p.add_argument("--aqlm", help="our CLI binary (.build/release/aqlm)")
    p.add_argument("--text", help="text file for perplexity (wiki.test.raw)")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32, help="greedy tokens to compare")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative PPL difference")
    p.add_argument("--threads", type=int, help="cores for torch and for aqlm (its --threads); default: theirs")
    p.add_argument("--native-decode", type=int, metavar="N", help="only time N tokens with aqlm's own kernel")
    a = p.parse_args()
    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)

    if a.native_decode:
        print(json.dumps(native_decode(a.directory, a.native_decode, a.prompt)))
        return
    if not a.aqlm or not a.text:
        fail("--aqlm and --text are required (or --native-decode)")

    model = load(a.directory, torch.float32)
    auto = load(a.directory, "auto")  # what a user gets by default: the dtype the config names
    default_dtype = str(next(auto.parameters()).dtype).replace("torch.", "")
    head_dtype_auto = str(auto.get_output_embeddings().weight.dtype).replace("torch.", "")
    del auto
    head_type = type(model.get_output_embeddings()).__name__
    if head_type != "Linear":
        fail(f"{a.directory}: the head loaded as {head_type}, not a dense Linear")
    replaced = replace_quantized(model)
    tokenizer = AutoTokenizer.from_pretrained(a.directory)
    with open(a.text, encoding="utf-8", newline="") as f:  # the bytes as they are: wiki.test.raw has CRLF
        text = f.read()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id if adds_bos(tokenizer) else None
    ppl, chunks = perplexity(model, ids, bos, a.ctx, a.chunks)
    prompt_ids = tokenizer(a.prompt)["input_ids"]
    tokens = greedy(model, prompt_ids, a.tokens, tokenizer.eos_token_id)

    common = ["--model", a.directory, "--head", "f32", "--json"] + (["--threads", str(a.threads)] if a.threads else [])
    ours_ppl = run_json([a.aqlm, "perplexity", "--text", a.text, "--ctx", str(a.ctx), "--chunks", str(a.chunks)] + common)
    ours_gen = run_json([a.aqlm, "generate", "--prompt", a.prompt, "-n", str(a.tokens), "--temp", "0"] + common)
    relative = abs(ppl - ours_ppl["ppl"]) / ours_ppl["ppl"]
    same_tokens = tokens == ours_gen["ids"]
    report = {
        "checkpoint": a.directory, "transformers": transformers.__version__, "aqlm": AQLM_VERSION,
        "torch": torch.__version__, "default_dtype": default_dtype, "head_dtype_auto": head_dtype_auto,
        "tied_head": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
        "quantized_linears": len(replaced),
        "bos": bos, "eos": tokenizer.eos_token_id, "has_chat_template": bool(tokenizer.chat_template),
        "chunks": chunks, "ctx": a.ctx, "ppl_transformers": ppl, "ppl_aqlm": ours_ppl["ppl"],
        "ppl_relative_difference": relative, "greedy_tokens": len(tokens), "greedy_identical": same_tokens,
        "greedy_transformers": tokens, "greedy_aqlm": ours_gen["ids"],
        "pass": relative <= a.tolerance and same_tokens,
    }
    print(json.dumps(report))
    sys.exit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
