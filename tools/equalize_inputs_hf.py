#!/usr/bin/env python3
"""Writes a Llama-family Hugging Face directory whose block linears see activation-equalized inputs (AWQ's
per-input-channel scaling, s_j = E[x_j²]^(β/2), geometric mean 1), the same function with other weights: an
experiment tool for issue 14, to ask whether AQLM codes W·diag(s) better than W (BENCHMARKS.md session 20).

Each scale is folded where the input is made, so no runtime operation is added:
  q/k/v input   W·diag(s) and the block's input_layernorm gain g/s
  gate/up input W·diag(s) and post_attention_layernorm's gain g/s
  o_proj input  W·diag(s) and v_proj's rows (and bias) divided by s (attention mixes each v channel on its own)
  down input    W·diag(s) and up_proj's rows divided by s (silu(gate)·up is per channel)
E[x_j²] comes from a float64 forward pass of the original over --windows windows of --seqlen tokens of a text
(the quantizer's calibration text, not a test text).

Usage: equalize_inputs_hf.py SRC_DIR OUT_DIR --text FILE [--beta 0.5] [--windows 16] [--seqlen 512]
Needs numpy, safetensors, tokenizers (tools/pyenv.sh's venv).
"""
import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


def rms_norm(h, gain, eps):
    return h / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + eps) * gain


def rope_rotate_half(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def input_second_moments(t, cfg, ids):
    """Mean x_j² of each block's four distinct linear inputs over the windows' positions."""
    d, n_heads, n_kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", d // n_heads)
    eps = cfg["rms_norm_eps"]
    w = lambda name: t[name].astype(np.float64)
    bias = lambda name: t[name].astype(np.float64) if name in t else 0.0
    seqlen = ids.shape[1]
    inv_freq = cfg.get("rope_theta", 10000.0) ** (-np.arange(0, hd, 2) / hd)
    angles = np.arange(seqlen)[:, None] * inv_freq[None, :]
    cos, sin = np.tile(np.cos(angles), 2), np.tile(np.sin(angles), 2)
    mask = np.triu(np.full((seqlen, seqlen), -np.inf), 1)
    moments = {}
    for window in ids:
        h = w("model.embed_tokens.weight")[window]
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = rms_norm(h, w(p + "input_layernorm.weight"), eps)
            q = (x @ w(p + "self_attn.q_proj.weight").T + bias(p + "self_attn.q_proj.bias")).reshape(seqlen, n_heads, hd)
            k = (x @ w(p + "self_attn.k_proj.weight").T + bias(p + "self_attn.k_proj.bias")).reshape(seqlen, n_kv, hd)
            v = (x @ w(p + "self_attn.v_proj.weight").T + bias(p + "self_attn.v_proj.bias")).reshape(seqlen, n_kv, hd)
            q = rope_rotate_half(q, cos[:, None, :], sin[:, None, :])
            k = rope_rotate_half(k, cos[:, None, :], sin[:, None, :])
            group = n_heads // n_kv
            heads = []
            for head in range(n_heads):
                scores = q[:, head] @ k[:, head // group].T / np.sqrt(hd) + mask
                scores = np.exp(scores - scores.max(axis=1, keepdims=True))
                heads.append((scores / scores.sum(axis=1, keepdims=True)) @ v[:, head // group])
            a = np.concatenate(heads, axis=1)
            h = h + a @ w(p + "self_attn.o_proj.weight").T
            m = rms_norm(h, w(p + "post_attention_layernorm.weight"), eps)
            gate, up = m @ w(p + "mlp.gate_proj.weight").T, m @ w(p + "mlp.up_proj.weight").T
            hidden = gate / (1 + np.exp(-gate)) * up
            h = h + hidden @ w(p + "mlp.down_proj.weight").T
            for name, x_in in (("attn", x), ("o", a), ("mlp", m), ("down", hidden)):
                moments[(i, name)] = moments.get((i, name), 0.0) + np.mean(x_in * x_in, axis=0) / len(ids)
    return moments


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src"); ap.add_argument("dst")
    ap.add_argument("--text", required=True)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=512)
    args = ap.parse_args()
    cfg = json.load(open(os.path.join(args.src, "config.json")))
    t = load_file(os.path.join(args.src, "model.safetensors"))
    tokens = Tokenizer.from_file(os.path.join(args.src, "tokenizer.json")).encode(open(args.text).read()).ids
    stride = (len(tokens) - args.seqlen) // args.windows
    ids = np.array([tokens[k * stride:k * stride + args.seqlen] for k in range(args.windows)])
    moments = input_second_moments(t, cfg, ids)

    out = dict(t)
    f64 = lambda name: out[name].astype(np.float64)
    put = lambda name, value: out.__setitem__(name, value.astype(np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, readers, maker in (
                ("attn", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "input_layernorm"),
                ("o", ["self_attn.o_proj"], "self_attn.v_proj"),
                ("mlp", ["mlp.gate_proj", "mlp.up_proj"], "post_attention_layernorm"),
                ("down", ["mlp.down_proj"], "mlp.up_proj")):
            moment = moments[(i, name)]
            if name == "o":   # one v channel feeds every query head of its group: those inputs share its scale
                n_kv, hd = cfg["num_key_value_heads"], cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
                per_kv = moment.reshape(n_kv, -1, hd).mean(axis=1)
                moment = np.repeat(per_kv[:, None, :], moment.size // (n_kv * hd), axis=1).reshape(-1)
            s = np.maximum(moment, 1e-12) ** (args.beta / 2)
            s = s / np.exp(np.mean(np.log(s)))
            for r in readers:
                put(p + r + ".weight", f64(p + r + ".weight") * s[None, :])
            if maker.endswith("norm"):
                put(p + maker + ".weight", f64(p + maker + ".weight") / s)
            else:
                made = s if name == "down" else s.reshape(cfg["num_key_value_heads"], -1, s.size // cfg["num_attention_heads"])[:, 0, :].reshape(-1)
                put(p + maker + ".weight", f64(p + maker + ".weight") / made[:, None])
                if p + maker + ".bias" in out:
                    put(p + maker + ".bias", f64(p + maker + ".bias") / made)

    tmp = args.dst + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for n in os.listdir(args.src):
        if n != "model.safetensors":
            shutil.copy(os.path.join(args.src, n), tmp)
    save_file(out, os.path.join(tmp, "model.safetensors"))
    os.rename(tmp, args.dst)
    print("wrote", args.dst)


if __name__ == "__main__":
    main()
