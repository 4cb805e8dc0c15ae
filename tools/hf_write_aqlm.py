#!/usr/bin/env python3
"""Writes an AQLM checkpoint the way the ecosystem does, for `aqlm` to read: a Hugging Face Llama
model whose block linears are the aqlm package's own `QuantizedLinear`, saved with transformers'
`save_pretrained` (and the tokenizer with the tokenizer's `save_pretrained`).

The codes come from a quick residual vector quantization of the real weights (per-row scale,
then for each codebook in turn: 2^B groups of the current residual drawn at random as the
codebook, every group coded to its nearest entry, the residual updated), or are random with
--codes random. Quality is not the point: the file layout is (int8 codes for B <= 8, int16 up to
16, through aqlm's own `pack_int_data`; codebooks/scales in --dtype).

Usage: hf_write_aqlm.py HF_DIR OUT_DIR --scheme 2x8|1x8|1x16 [--blocks N] [--dtype float16]
  HF_DIR: a Hugging Face model directory (tools/gguf_to_hf.py writes one from a GGUF).
  OUT_DIR must not exist.
Needs: tools/pyenv-hf.sh 4|5.
"""
import argparse
import os
import re
import sys

import torch
import transformers
from transformers import AqlmConfig, AutoModelForCausalLM, AutoTokenizer

from aqlm import QuantizedLinear
from aqlm.utils import pack_int_data

GROUP = 8
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def nearest(groups, codebook, chunk=1024):
    """Index of the nearest codebook row for every group (squared Euclidean distance)."""
    norms = (codebook * codebook).sum(1)
    out = torch.empty(groups.shape[0], dtype=torch.int64)
    for start in range(0, groups.shape[0], chunk):
        g = groups[start:start + chunk]
        out[start:start + chunk] = (norms[None, :] - 2 * g @ codebook.T).argmin(1)
    return out


def quantize(linear, num_codebooks, nbits, mode, generator):
    d_out, d_in = linear.weight.shape
    size = 2 ** nbits
    q = QuantizedLinear(d_in, d_out, in_group_size=GROUP, out_group_size=1, num_codebooks=num_codebooks,
                        nbits_per_codebook=nbits, bias=linear.bias is not None, dtype=torch.float32)
    w = linear.weight.data.float()
    scales = w.norm(dim=1, keepdim=True) / d_in ** 0.5
    residual = (w / scales).reshape(-1, GROUP)
    codebooks = torch.empty(num_codebooks, size, 1, GROUP)
    codes = torch.empty(residual.shape[0], num_codebooks, dtype=torch.int64)
    for m in range(num_codebooks):
        if mode == "random":
            codebooks[m, :, 0] = torch.randn(size, GROUP, generator=generator) * 0.5
            codes[:, m] = torch.randint(0, size, (residual.shape[0],), generator=generator)
        else:
            picks = torch.randint(0, residual.shape[0], (size,), generator=generator)
            codebooks[m, :, 0] = residual[picks]
            codes[:, m] = nearest(residual, codebooks[m, :, 0])
        residual = residual - codebooks[m, codes[:, m], 0]
    q.codebooks.data.copy_(codebooks)
    q.codes.data = pack_int_data(codes.reshape(d_out, d_in // GROUP, num_codebooks), nbits)
    q.scales.data.copy_(scales.reshape(d_out, 1, 1, 1))
    if linear.bias is not None:
        q.bias.data.copy_(linear.bias.data.float())
    return q


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("hf_dir")
    p.add_argument("out_dir")
    p.add_argument("--scheme", required=True, help="MxB: 2x8, 1x8, 1x16, ...")
    p.add_argument("--blocks", type=int, help="quantize only the first N blocks (the rest stay nn.Linear)")
    p.add_argument("--codes", choices=["fit", "random"], default="fit")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    match = re.fullmatch(r"(\d+)x(\d+)", a.scheme)
    if not match:
        sys.exit(f"hf_write_aqlm: --scheme '{a.scheme}' is not MxB")
    num_codebooks, nbits = int(match[1]), int(match[2])
    if os.path.exists(a.out_dir):
        sys.exit(f"hf_write_aqlm: {a.out_dir} already exists")

    generator = torch.Generator().manual_seed(a.seed)
    model = AutoModelForCausalLM.from_pretrained(a.hf_dir, dtype=torch.float32)
    layers = model.model.layers
    blocks = len(layers) if a.blocks is None else a.blocks
    kept = ["model.embed_tokens.weight", "lm_head.weight", "lm_head"]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for name in LINEARS:
                full = f"model.layers.{i}.{name}"
                parent_name, _, child = name.rpartition(".")
                parent = layer.get_submodule(parent_name)
                if i < blocks:
                    setattr(parent, child, quantize(getattr(parent, child), num_codebooks, nbits, a.codes, generator))
                else:
                    kept += [full + ".weight", full]
    model.config.quantization_config = AqlmConfig(in_group_size=GROUP, out_group_size=1, num_codebooks=num_codebooks,
                                                  nbits_per_codebook=nbits, linear_weights_not_to_quantize=kept)
    dtype = getattr(torch, a.dtype)
    for module in model.modules():  # floating tensors to --dtype; the int codes stay as packed
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(dtype)
    model.config.torch_dtype = dtype
    partial = a.out_dir + ".partial"
    model.save_pretrained(partial, safe_serialization=True)
    AutoTokenizer.from_pretrained(a.hf_dir).save_pretrained(partial)
    os.rename(partial, a.out_dir)
    print(a.out_dir)


if __name__ == "__main__":
    main()
