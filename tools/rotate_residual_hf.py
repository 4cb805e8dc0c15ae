#!/usr/bin/env python3
"""Writes a Llama-family Hugging Face directory whose residual stream is rotated by a random orthogonal Q
(QuaRot/SpinQuant's R1), the same function with other weights: an experiment tool for issue 14, to ask
whether AQLM codes incoherent weights better (BENCHMARKS.md session 20: it does not).

  h' = Q h           embedding rows E Qᵀ; every RMSNorm gain g folded into the linears that read it (W diag(g) Qᵀ
                     for q/k/v/gate/up and the head), the gains set to 1 (RMS is rotation-invariant);
                     o_proj and down_proj, which write the residual, become Q W
  head               untied (the tied head would need a non-diagonal final gain)

Usage: rotate_residual_hf.py SRC_DIR OUT_DIR [SEED | fold]   (SRC_DIR: F32 safetensors, e.g. from tools/gguf_to_hf.py;
OUT_DIR appears only when complete). `fold` leaves Q the identity and only folds the blocks' RMSNorm gains into
their linears (the final norm and a tied head stay): the rotation's other change, alone. Needs numpy and safetensors (tools/pyenv.sh's venv).
"""
import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def haar_orthogonal(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def main():
    src, dst = sys.argv[1], sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "0"
    cfg = json.load(open(os.path.join(src, "config.json")))
    t = load_file(os.path.join(src, "model.safetensors"))
    d = cfg["hidden_size"]
    fold_only = mode == "fold"
    Q = np.eye(d) if fold_only else haar_orthogonal(d, int(mode))
    f64 = lambda name: t[name].astype(np.float64)
    reads = lambda w, gain: ((w * gain[None, :]) @ Q.T).astype(np.float32)   # a linear reading a normed residual
    writes = lambda w: (Q @ w).astype(np.float32)                            # a linear adding into the residual

    out = {}
    embedding = f64("model.embed_tokens.weight")
    head = f64("lm_head.weight") if "lm_head.weight" in t else embedding
    out["model.embed_tokens.weight"] = (embedding @ Q.T).astype(np.float32)
    if fold_only:
        out["model.norm.weight"] = t["model.norm.weight"]
        if "lm_head.weight" in t:
            out["lm_head.weight"] = t["lm_head.weight"]
    else:
        out["lm_head.weight"] = reads(head, f64("model.norm.weight"))
        out["model.norm.weight"] = np.ones(d, np.float32)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        attention_gain, mlp_gain = f64(p + "input_layernorm.weight"), f64(p + "post_attention_layernorm.weight")
        for n in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]:
            out[p + n + ".weight"] = reads(f64(p + n + ".weight"), attention_gain)
        for n in ["mlp.gate_proj", "mlp.up_proj"]:
            out[p + n + ".weight"] = reads(f64(p + n + ".weight"), mlp_gain)
        for n in ["self_attn.o_proj", "mlp.down_proj"]:
            if p + n + ".bias" in t:
                sys.exit(f"{p + n}.bias: a bias on a residual writer is not handled")
            out[p + n + ".weight"] = writes(f64(p + n + ".weight"))
        out[p + "input_layernorm.weight"] = np.ones(d, np.float32)
        out[p + "post_attention_layernorm.weight"] = np.ones(d, np.float32)
        for n in ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]:
            if p + n in t:
                out[p + n] = t[p + n]   # added after the projection: unaffected by the input rotation
    missed = [k for k in t if k not in out]
    if missed:
        sys.exit(f"tensors not handled: {missed[:5]}")
    cfg["tie_word_embeddings"] = "lm_head.weight" not in out

    tmp = dst + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for n in os.listdir(src):
        if n not in ("model.safetensors", "config.json"):
            shutil.copy(os.path.join(src, n), tmp)
    with open(os.path.join(tmp, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    save_file(out, os.path.join(tmp, "model.safetensors"))
    os.rename(tmp, dst)
    print("wrote", dst)


if __name__ == "__main__":
    main()
