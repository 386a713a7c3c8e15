"""Writes a model directory vLLM can serve with ``--load-format dummy``: Llama-3.1-8B's real
config.json and a word-level tokenizer covering the whole 128,256-token vocabulary.

No weights are needed (dummy weights are random), so throughput and latency are those of the
real architecture; accuracy is meaningless. Every token id decodes (``t<id>``), so random
outputs never trip the detokenizer, and a prompt of N words is exactly N tokens.

    python bench/real/make_dummy_model.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "torch_dtype": "bfloat16",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


def make(out: Path) -> None:
    """Write config.json, tokenizer.json and tokenizer_config.json into ``out``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(LLAMA_31_8B, indent=2))
    vocab = {f"t{i}": i for i in range(LLAMA_31_8B["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "t128000",
                "eos_token": "t128001",
                "unk_token": "t0",
                "model_max_length": 131072,
                "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
            }
        )
    )
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 128000, "eos_token_id": 128001})
    )


if __name__ == "__main__":
    make(Path(sys.argv[1] if len(sys.argv) > 1 else "dummy-llama-3.1-8b"))
