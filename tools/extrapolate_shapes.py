#!/usr/bin/env python3
"""Extrapolates `aqlm quantize` from measured per-block figures to Llama-3-8B, Llama-2-13B and Llama-3-70B shapes.

    tools/extrapolate_shapes.py --fast FAST/report.json --default DEFAULT/report.json [--default-samples 192] [--val-samples 8] [--json OUT]

Both reports come from quantizing a Llama-3-8B-shaped model (tools/llama3_shaped.py) alone on the machine: FAST with
`--preset fast`, DEFAULT with `--preset default --samples S` (S small, so one block finishes in reasonable time; the
search does not depend on S, the calibration forward and block-wise fine-tuning are linear in it). Standard library only.

The model, per block, each term's constant fitted to the measured blocks of its preset (printed, with how well the
per-layer fit holds):
- search (initialisation, beam search, codebook updates) per linear ∝ d_out · d_in²: the beam search scores every
  group against the rest of its row through XᵀX, so the wide-input down_proj costs ~3.5x gate_proj at equal size;
- calibration forward ∝ tokens · (block parameters + Σ d_in² over the four XᵀX inputs);
- block-wise fine-tuning ∝ training tokens · parameters (the held-out windows, min(--val-samples, samples/4), are not
  trained on); the rest of the block (error measurement, the next block's inputs) ∝ tokens · parameters.
Peak memory = 8 B per block parameter (the Float32 block and its dequantized copy) + 12 B per XᵀX entry (Float64
accumulator/H and the Float32 batch product) + the calibration activations kept in memory (above 2 GB they go to files),
plus a constant fitted to the measured peak. Packed size at 2.005 bits per block weight (2x8 with codebooks and scales)
with the embedding and head in F16; `aqlm generate` memory = the packed linears + embedding and head as Q8_0 (8.5 bits)
+ a Float32 KV cache at ctx 2048.
"""
import argparse
import json
import sys

SHAPES = [
    # name, blocks, hidden, ffn, kv width, vocabulary, untied head
    ("Llama-3-8B", 32, 4096, 14336, 1024, 128256, True),
    ("Llama-2-13B", 40, 5120, 13824, 5120, 32000, True),
    ("Llama-3-70B", 80, 8192, 28672, 1024, 128256, True),
]
ACTIVATION_MEMORY_LIMIT = 2_000_000_000  # QuantizeOptions.activationMemoryLimit


def linears(hidden, ffn, kv):
    """(name, d_out, d_in) of one block's seven linears."""
    return [("q_proj", hidden, hidden), ("k_proj", kv, hidden), ("v_proj", kv, hidden), ("o_proj", hidden, hidden),
            ("gate_proj", ffn, hidden), ("up_proj", ffn, hidden), ("down_proj", hidden, ffn)]


def block_parameters(hidden, ffn, kv):
    return sum(o * i for _, o, i in linears(hidden, ffn, kv))


def hessian_entries(hidden, ffn):
    """XᵀX accumulators: attention input, o_proj input, MLP input (all hidden wide) and down_proj input."""
    return 3 * hidden * hidden + ffn * ffn


def training_tokens(samples, seqlen, validation):
    """Block-wise fine-tuning holds out min(validation, samples / 4) windows (BlockFinetuneOptions)."""
    return (samples - min(validation, samples // 4)) * seqlen


def fit(report, validation):
    """Per-term constants of one measured preset, from its report.json."""
    tokens = report["samples"] * report["seqlen"]
    trained = training_tokens(report["samples"], report["seqlen"], validation)
    blocks = report["blocks"]
    search_seconds = search_units = 0.0
    residuals = []
    cal = ft = rest = 0.0
    for b in blocks:
        for layer in b["layers"]:
            d_out, d_in = layer["shape"]
            search_seconds += layer["seconds"]
            search_units += d_out * d_in * d_in
        cal += b["calibration_seconds"]
        ft += b.get("finetune_seconds") or 0.0
        rest += b["seconds"] - b["calibration_seconds"] - (b.get("finetune_seconds") or 0.0) - sum(l["seconds"] for l in b["layers"])
    k = search_seconds / search_units
    for b in blocks:
        for layer in b["layers"]:
            d_out, d_in = layer["shape"]
            residuals.append((layer["name"].split(".")[-1], layer["seconds"] / (k * d_out * d_in * d_in)))
    # The measured model's shape, from its layers.
    shapes = {l["name"].split(".")[-1]: l["shape"] for l in blocks[0]["layers"]}
    hidden, ffn, kv = shapes["q_proj"][0], shapes["gate_proj"][0], shapes["k_proj"][0]
    p = block_parameters(hidden, ffn, kv)
    n = len(blocks)
    return {
        "tokens": tokens, "blocks": n, "hidden": hidden, "ffn": ffn, "kv": kv,
        "search_seconds_per_unit": k,
        "calibration_seconds_per_token_unit": cal / n / (tokens * (p + hessian_entries(hidden, ffn))),
        "finetune_seconds_per_token_parameter": ft / n / (trained * p),
        "rest_seconds_per_token_parameter": rest / n / (tokens * p),
        "measured_block_seconds": [b["seconds"] for b in blocks],
        "search_fit": residuals,
        "peak_rss_bytes": max(b.get("peak_rss_bytes") or 0 for b in blocks),
    }


def block_seconds(f, hidden, ffn, kv, samples, seqlen, validation):
    p = block_parameters(hidden, ffn, kv)
    tokens = samples * seqlen
    search = f["search_seconds_per_unit"] * sum(o * i * i for _, o, i in linears(hidden, ffn, kv))
    cal = f["calibration_seconds_per_token_unit"] * tokens * (p + hessian_entries(hidden, ffn))
    finetune = f["finetune_seconds_per_token_parameter"] * training_tokens(samples, seqlen, validation) * p
    rest = f["rest_seconds_per_token_parameter"] * tokens * p
    return search + cal + finetune + rest


def activation_bytes(samples, seqlen, hidden):
    """Hidden states, targets and the full-precision chain (fp-chain targets, the default)."""
    return 3 * samples * seqlen * hidden * 4


def memory_bytes(hidden, ffn, kv, samples, seqlen, constant):
    in_memory = activation_bytes(samples, seqlen, hidden)
    if in_memory > ACTIVATION_MEMORY_LIMIT:
        in_memory = 0
    return 8 * block_parameters(hidden, ffn, kv) + 12 * hessian_entries(hidden, ffn) + in_memory + constant


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", required=True, help="report.json of the 8B-shaped model at --preset fast")
    ap.add_argument("--default", required=True, help="report.json of the 8B-shaped model at --preset default --samples S")
    ap.add_argument("--default-samples", type=int, default=192, help="the default preset's calibration sequences")
    ap.add_argument("--val-samples", type=int, default=8, help="block-wise fine-tuning's held-out windows (its default)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    try:
        reports = {name: json.load(open(path)) for name, path in (("fast", a.fast), ("default", a.default))}
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"extrapolate_shapes: {e}")
    for name, r in reports.items():
        if not r.get("blocks") or "samples" not in r or "seqlen" not in r:
            sys.exit(f"extrapolate_shapes: --{name}: not an `aqlm quantize` report.json with per-block figures")
    fits = {name: fit(r, a.val_samples) for name, r in reports.items()}
    fast, default = fits["fast"], fits["default"]
    seqlen = reports["fast"]["seqlen"]
    # The constant of the memory model: the measured fast peak minus what the model accounts for.
    constant = fast["peak_rss_bytes"] - memory_bytes(fast["hidden"], fast["ffn"], fast["kv"], reports["fast"]["samples"],
                                                     seqlen, 0)
    for name, f in fits.items():
        print(f"{name}: {f['blocks']} measured block(s) of {f['tokens']} calibration tokens, "
              f"{', '.join(f'{s:.0f}' for s in f['measured_block_seconds'])} s; search per layer, measured / fitted: "
              + ", ".join(f"{n} {r:.2f}" for n, r in f["search_fit"]), file=sys.stderr)
    print(f"memory model constant: {constant / 1e9:.2f} GB (measured fast peak {fast['peak_rss_bytes'] / 1e9:.2f} GB)",
          file=sys.stderr)
    rows = []
    for name, blocks, hidden, ffn, kv, vocab, untied in SHAPES:
        p = block_parameters(hidden, ffn, kv)
        fast_blocks = block_seconds(fast, hidden, ffn, kv, reports["fast"]["samples"], seqlen, a.val_samples)
        default_blocks = block_seconds(default, hidden, ffn, kv, a.default_samples, seqlen, a.val_samples)
        embedding = vocab * hidden * (2 if untied else 1)
        packed = blocks * p * 2.005 / 8 + embedding * 2
        generate = blocks * p * 2.005 / 8 + embedding * 8.5 / 8 + 2 * blocks * 2048 * kv * 4
        rows.append({
            "shape": name, "blocks": blocks, "block_parameters": p,
            "fast_block_seconds": fast_blocks, "default_block_seconds": default_blocks,
            "fast_hours": blocks * fast_blocks / 3600, "default_hours": blocks * default_blocks / 3600,
            "default_peak_bytes": memory_bytes(hidden, ffn, kv, a.default_samples, seqlen, constant),
            "fast_peak_bytes": memory_bytes(hidden, ffn, kv, reports["fast"]["samples"], seqlen, constant),
            "packed_bytes": packed, "generate_bytes": generate,
        })
    print("| shape | blocks × parameters per block | default, s per block | default, hours | fast, s per block | fast, hours "
          "| quantize peak, default (fast) | packed size | `generate` memory (ctx 2048) |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['blocks']} × {r['block_parameters'] / 1e6:.1f} M | {r['default_block_seconds']:,.0f} "
              f"| {r['default_hours']:.1f} | {r['fast_block_seconds']:,.0f} | {r['fast_hours']:.1f} "
              f"| {r['default_peak_bytes'] / 1e9:.1f} GB ({r['fast_peak_bytes'] / 1e9:.1f} GB) | {r['packed_bytes'] / 1e9:.2f} GB "
              f"| {r['generate_bytes'] / 1e9:.1f} GB |")
    if a.json:
        with open(a.json, "w") as out:
            json.dump({"fits": fits, "memory_constant_bytes": constant, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
