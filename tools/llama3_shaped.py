#!/usr/bin/env python3
"""Writes a Hugging Face model directory with Llama-3-8B's shapes and random weights.

For measuring how `aqlm quantize` and `aqlm generate` scale with width and depth without
downloading a real 8B checkpoint: hidden 4096, feed-forward 14336, 32 heads, 8 KV heads,
vocabulary 128256, untied head, rope theta 500000, BF16 safetensors. `--blocks N` sets
num_hidden_layers (the flatness check uses 2 and 4); `--hidden/--ffn/...` give the 13B and 70B
shapes or smaller ones for a quick try.

Weights are normal with std 0.02 (a trained model's scale: Llama's init and roughly its
trained linears), RMSNorm gains 1 ± 0.02. The tokenizer.json is byte-level BPE with the Llama 3
pre-tokenizer: the 256 byte tokens, then merges that build the most frequent words of the
given text (prefix by prefix) until 128000 tokens, then 256 special tokens (<|begin_of_text|>,
<|end_of_text|>, reserved ones), 128256 in all, as Llama 3's. Its merges are not Llama 3's:
it tokenizes text consistently, which is all a shape benchmark needs.

Usage (with the project's venv: PY=$(tools/pyenv.sh)):
    $PY tools/llama3_shaped.py --out runs/llama3-8b-shaped-2 --blocks 2 --text ../shared/data/wikitext-2/wiki.test.raw
Deterministic for a fixed --seed. Writes into OUT.partial then renames.
"""
import argparse
import collections
import json
import os
import re
import shutil
import sys

import numpy as np

# Llama 3's Split pattern (digits in runs of up to three); must match PreTokenizerRules.llama3Pattern.
LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def byte_alphabet():
    """GPT-2's byte -> printable character map (bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json(text, regular_tokens, special_tokens):
    """Vocabulary of `regular_tokens` byte-level tokens built from `text`'s frequent words, plus specials."""
    alphabet = byte_alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    merges = []
    # Words as the pre-tokenizer roughly splits them (a leading space kept), most frequent first.
    words = collections.Counter(re.findall(r" ?[A-Za-z]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+", text))
    for word, _ in words.most_common():
        if len(vocab) >= regular_tokens:
            break
        symbols = "".join(alphabet[b] for b in word.encode("utf-8"))
        prefix = symbols[0]
        for ch in symbols[1:]:
            if len(vocab) >= regular_tokens:
                break
            merged = prefix + ch
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append([prefix, ch])
            prefix = merged
    # Text too short for the whole vocabulary: pairs of existing tokens fill the rest.
    tokens = list(vocab)
    i = 0
    while len(vocab) < regular_tokens:
        a, b = tokens[i % len(tokens)], tokens[(i * 7919 + 13) % len(tokens)]
        i += 1
        if a + b not in vocab and len(a + b) <= 16:
            vocab[a + b] = len(vocab)
            merges.append([a, b])
            tokens.append(a + b)
    added = []
    for k, name in enumerate(special_tokens):
        vocab[name] = regular_tokens + k
        added.append({"id": regular_tokens + k, "content": name, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def bf16_bytes(x):
    """Float32 array -> BF16 bytes, round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).tobytes()


def tensor_list(a):
    """(name, shape, kind) of every tensor, kind 'norm' or 'linear'."""
    q, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    out = [("model.embed_tokens.weight", [a.vocab, a.hidden], "linear"),
           ("model.norm.weight", [a.hidden], "norm"),
           ("lm_head.weight", [a.vocab, a.hidden], "linear")]
    for l in range(a.blocks):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", [a.hidden], "norm"),
                (p + "post_attention_layernorm.weight", [a.hidden], "norm"),
                (p + "self_attn.q_proj.weight", [q, a.hidden], "linear"),
                (p + "self_attn.k_proj.weight", [kv, a.hidden], "linear"),
                (p + "self_attn.v_proj.weight", [kv, a.hidden], "linear"),
                (p + "self_attn.o_proj.weight", [a.hidden, q], "linear"),
                (p + "mlp.gate_proj.weight", [a.ffn, a.hidden], "linear"),
                (p + "mlp.up_proj.weight", [a.ffn, a.hidden], "linear"),
                (p + "mlp.down_proj.weight", [a.hidden, a.ffn], "linear")]
    return out


def write_safetensors(path, tensors, rng, std):
    """One BF16 safetensors file, tensors generated and written a chunk of rows at a time."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name, shape, kind in tensors:
            rows, width = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if kind == "norm":
                f.write(bf16_bytes(1 + std * rng.standard_normal(shape[0], dtype=np.float32)))
                continue
            chunk = max(1, (1 << 24) // width)
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                f.write(bf16_bytes(std * rng.standard_normal(n * width, dtype=np.float32)))
            print(f"  {name} {shape}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output model directory (must not exist)")
    p.add_argument("--blocks", type=int, default=2, help="num_hidden_layers")
    p.add_argument("--hidden", type=int, default=4096, help="hidden_size")
    p.add_argument("--ffn", type=int, default=14336, help="intermediate_size")
    p.add_argument("--heads", type=int, default=32, help="num_attention_heads")
    p.add_argument("--kv-heads", type=int, default=8, help="num_key_value_heads")
    p.add_argument("--vocab", type=int, default=128256, help="vocab_size (the last 256 ids are special tokens)")
    p.add_argument("--std", type=float, default=0.02, help="standard deviation of the weights")
    p.add_argument("--text", required=True, help="text whose frequent words the tokenizer's merges build")
    p.add_argument("--seed", type=int, default=0, help="weights' random seed")
    a = p.parse_args()
    a.head_dim = a.hidden // a.heads
    if os.path.exists(a.out):
        sys.exit(f"llama3_shaped: {a.out} already exists")
    if a.vocab <= 256 + 256 or a.hidden % a.heads or a.heads % a.kv_heads:
        sys.exit("llama3_shaped: vocab must exceed 512, heads divide hidden, kv-heads divide heads")
    tmp = a.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(254)]
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    tok = tokenizer_json(text, a.vocab - len(specials), specials)
    with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    bos, eos = a.vocab - 256, a.vocab - 255
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": True}, f)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
        "hidden_act": "silu", "hidden_size": a.hidden, "intermediate_size": a.ffn,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "num_hidden_layers": a.blocks,
        "vocab_size": a.vocab, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": None, "tie_word_embeddings": False, "bos_token_id": bos, "eos_token_id": eos,
        "torch_dtype": "bfloat16",
    }
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_safetensors(os.path.join(tmp, "model.safetensors"), tensor_list(a), np.random.default_rng(a.seed), a.std)
    os.rename(tmp, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
