#!/usr/bin/env python3
"""Build a random-weight Llama that vLLM serves offline, with a real
tokenizer so prompts tokenize as in production.

usage: build_model.py OUT_DIR TOKENIZER_DIR [SIZE]

SIZE is `tiny` (default: 2 layers, hidden 256 — fast, for the quick tests) or
`small` (6 layers, hidden 768, 12 heads / 4 KV heads, MLP 2304 — on one core
its prefill and decode dominate the machine's noise, for calibration).

TOKENIZER_DIR holds tokenizer.json (or tokenizer.json.gz) and
tokenizer_config.json (with its chat template), e.g. the shipped Qwen3 one.
The embedding is sized to the tokenizer's full vocabulary (special tokens
included). Outputs are noise; scheduling, prefix caching, /metrics and KV
events are the real engine's.
"""
import gzip
import json
import os
import shutil
import sys

SIZES = {
    # hidden, layers, heads, kv heads, intermediate
    "tiny": (256, 2, 4, 4, 512),
    "small": (768, 6, 12, 4, 2304),
}
MAX_POS = 8192


def copy_tokenizer(src: str, out: str) -> int:
    gz = os.path.join(src, "tokenizer.json.gz")
    plain = os.path.join(src, "tokenizer.json")
    dst = os.path.join(out, "tokenizer.json")
    if os.path.exists(plain):
        shutil.copyfile(plain, dst)
    else:
        with gzip.open(gz, "rb") as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
    shutil.copyfile(os.path.join(src, "tokenizer_config.json"),
                    os.path.join(out, "tokenizer_config.json"))
    from tokenizers import Tokenizer
    return Tokenizer.from_file(dst).get_vocab_size(with_added_tokens=True)


def main() -> None:
    global HIDDEN, LAYERS, HEADS, KV_HEADS, INTER
    out, tok_dir = sys.argv[1], sys.argv[2]
    size = sys.argv[3] if len(sys.argv) > 3 else "tiny"
    if size not in SIZES:
        sys.exit(f"unknown size {size!r}: one of {', '.join(SIZES)}")
    HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = SIZES[size]
    os.makedirs(out, exist_ok=True)
    vocab = copy_tokenizer(tok_dir, out)
    cfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    eos_id = 151645 if vocab > 151645 else vocab - 1  # Qwen3 <|im_end|>
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": HIDDEN, "intermediate_size": INTER,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HIDDEN // HEADS,
        "hidden_act": "silu", "max_position_embeddings": MAX_POS,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False,
        "bos_token_id": None, "eos_token_id": eos_id, "pad_token_id": eos_id,
        "torch_dtype": "bfloat16",
    }
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"eos_token_id": eos_id, "pad_token_id": eos_id},
              open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    del cfg

    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    hd = HIDDEN // HEADS
    t = {
        "model.embed_tokens.weight": rnd(vocab, HIDDEN),
        "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
        "lm_head.weight": rnd(vocab, HIDDEN),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        t[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        t[p + "self_attn.q_proj.weight"] = rnd(HEADS * hd, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = rnd(KV_HEADS * hd, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = rnd(KV_HEADS * hd, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = rnd(HIDDEN, HEADS * hd)
        t[p + "mlp.gate_proj.weight"] = rnd(INTER, HIDDEN)
        t[p + "mlp.up_proj.weight"] = rnd(INTER, HIDDEN)
        t[p + "mlp.down_proj.weight"] = rnd(HIDDEN, INTER)
    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {out} (vocab {vocab})")


if __name__ == "__main__":
    main()
