#!/usr/bin/env python3
"""Writes a llama-family GGUF as a Hugging Face model directory, using only third-party readers,
so the project's Swift GGUF and safetensors paths can be cross-checked on files it did not write.

  config.json            from the GGUF metadata
  model.safetensors      every tensor in F32, dequantized by gguf-py's own dequantizer, renamed to
                         Hugging Face names, q/k rows un-permuted (the inverse of llama.cpp's
                         convert_hf_to_gguf permute) back to rotate-half order
  tokenizer.json         built with the `tokenizers` library from the GGUF vocabulary and merges,
                         with the pre-tokenizer that splits text as llama.cpp's tokenizer.ggml.pre
  tokenizer_config.json  BOS/EOS names, add_bos_token, chat template

Usage: gguf_to_hf.py MODEL.gguf OUT_DIR   (OUT_DIR is replaced atomically when complete)
Needs: numpy, gguf, safetensors, tokenizers (tools/pyenv.sh makes such a venv).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

ARCHITECTURE_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}

BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 3, 4, 5


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(name):
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in BLOCK_NAMES:
        return f"model.layers.{int(parts[1])}.{BLOCK_NAMES[parts[2]]}"
    return None


def unpermute(w, n_head):
    """convert_hf_to_gguf stores q/k as w.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2): rows of a
    head's RoPE pair (i, i + hd/2) become adjacent (2i, 2i+1). This undoes it."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def model_config(reader):
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURE_CLASSES:
        sys.exit(f"gguf_to_hf: unsupported architecture {arch!r}")

    def meta(key, default=None):
        value = field(reader, f"{arch}.{key}", default)
        if value is None:
            sys.exit(f"gguf_to_hf: missing {arch}.{key}")
        return value

    names = {t.name for t in reader.tensors}
    hidden, heads = int(meta("embedding_length")), int(meta("attention.head_count"))
    config = {
        "architectures": [ARCHITECTURE_CLASSES[arch]],
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "head_dim": int(meta("attention.key_length", hidden // heads)),
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": int(meta("feed_forward_length")),
        "max_position_embeddings": int(meta("context_length")),
        "model_type": arch,
        "num_attention_heads": heads,
        "num_hidden_layers": int(meta("block_count")),
        "num_key_value_heads": int(meta("attention.head_count_kv", heads)),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_scaling": None,
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
        "vocab_size": int(meta("vocab_size", len(field(reader, "tokenizer.ggml.tokens")))),
    }
    if arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in names
    return arch, config


def tensors(reader, arch, config):
    out = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            continue
        shape = [int(d) for d in reversed(t.shape)]
        values = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        # llama.cpp permutes q/k of llama and mistral only; qwen2 is stored as Hugging Face has it.
        if arch != "qwen2" and name.endswith(("q_proj.weight", "q_proj.bias")):
            values = unpermute(values, config["num_attention_heads"])
        elif arch != "qwen2" and name.endswith(("k_proj.weight", "k_proj.bias")):
            values = unpermute(values, config["num_key_value_heads"])
        out[name] = np.ascontiguousarray(values)
    return out


def pre_tokenizer(pre):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "gpt2":
        return byte_level
    if pre == "smollm":
        # llama.cpp isolates each \p{N} character, then applies the GPT-2 pattern.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("llama-bpe", "qwen2"):
        split = pre_tokenizers.Split(
            pattern=Regex(LLAMA3_SPLIT if pre == "llama-bpe" else QWEN2_SPLIT),
            behavior="isolated", invert=False)
        return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    sys.exit(f"gguf_to_hf: tokenizer.ggml.pre {pre!r} has no tokenizers equivalent here")


def tokenizer(reader):
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        sys.exit("gguf_to_hf: only byte-level BPE (tokenizer.ggml.model 'gpt2') is supported")
    tokens = list(field(reader, "tokenizer.ggml.tokens"))
    types = list(field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges", [])]
    # Trailing unused tokens are llama.cpp's padding of the vocabulary to the embedding size.
    while tokens and types[-1] == TOKEN_UNUSED:
        tokens.pop()
        types.pop()
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizer(field(reader, "tokenizer.ggml.pre", "default"))
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=True)
                    for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED])
    for i, t in enumerate(tokens):
        if tok.token_to_id(t) != i:
            sys.exit(f"gguf_to_hf: token {i} {t!r} did not keep its id")
    return tok, tokens


def tokenizer_config(reader, tokens, config):
    def name(key):
        i = field(reader, key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    out = {
        "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "bos_token": name("tokenizer.ggml.bos_token_id"),
        "eos_token": name("tokenizer.ggml.eos_token_id"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    template = field(reader, "tokenizer.chat_template")
    if template is not None:
        out["chat_template"] = template
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf")
    parser.add_argument("out")
    args = parser.parse_args()

    reader = GGUFReader(args.gguf)
    arch, config = model_config(reader)
    tok, tokens = tokenizer(reader)
    weights = tensors(reader, arch, config)

    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".gguf_to_hf-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer_config(reader, tokens, config), f, indent=2, ensure_ascii=False)
        tok.save(os.path.join(tmp, "tokenizer.json"))
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"gguf_to_hf: wrote {len(weights)} tensors and {len(tokens)} tokens to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
