"""ModelConfig: built from GGUF metadata and from HF config.json, validated, per family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitnet_lab.config import ACTIVATION_KEY, ModelConfig
from bitnet_lab.errors import ConfigError

REAL = Path(__file__).parent / "data" / "real-files"


def _md(arch: str, **extra):
    md = {
        "general.architecture": arch,
        f"{arch}.embedding_length": 2560,
        f"{arch}.block_count": 30,
        f"{arch}.feed_forward_length": 6912,
        f"{arch}.attention.head_count": 20,
        f"{arch}.attention.head_count_kv": 5,
        f"{arch}.vocab_size": 128256,
        f"{arch}.context_length": 4096,
        f"{arch}.rope.freq_base": 500000.0,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.bos_token_id": 128000,
        "tokenizer.ggml.eos_token_id": 128001,
    }
    md.update(extra)
    return md


SUBNORM_NAMES = {"blk.0.attn_sub_norm.weight", "blk.0.ffn_sub_norm.weight", "token_embd.weight"}


def test_2b4t_gguf_metadata_gives_relu2_gqa_neox_tied():
    c = ModelConfig.from_gguf(_md("bitnet-b1.58"), SUBNORM_NAMES)
    assert (c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn) == (2560, 30, 20, 5, 128, 6912)
    assert c.activation == "relu2" and c.sub_norms and c.tied_output
    assert c.rope_style == "neox" and c.n_rep == 4 and c.kv_dim == 640
    assert (c.bos_id, c.eos_id) == (128000, 128001)


@pytest.mark.parametrize(
    "arch, tokenizer_model, expected",
    [
        ("bitnet-25", "gpt2", "relu2"),
        ("bitnet-b1.58", "gpt2", "relu2"),
        ("bitnet-b1.58", "llama", "silu"),  # 1bitLLM relabelled by the current converter
        ("bitnet", "llama", "silu"),
        ("llama", "gpt2", "silu"),
    ],
)
def test_activation_rules(arch, tokenizer_model, expected):
    c = ModelConfig.from_gguf(_md(arch, **{"tokenizer.ggml.model": tokenizer_model}), SUBNORM_NAMES)
    assert c.activation == expected


def test_explicit_activation_key_wins_and_is_validated():
    c = ModelConfig.from_gguf(_md("bitnet", **{ACTIVATION_KEY: "relu2"}), SUBNORM_NAMES)
    assert c.activation == "relu2"
    with pytest.raises(ConfigError, match="gelu"):
        ModelConfig.from_gguf(_md("bitnet", **{ACTIVATION_KEY: "gelu"}), SUBNORM_NAMES)


def test_llama_arch_is_interleaved_rope_and_untied_when_output_present():
    c = ModelConfig.from_gguf(_md("llama"), {"token_embd.weight", "output.weight"})
    assert c.rope_style == "norm" and not c.tied_output and not c.sub_norms


def test_missing_and_unknown_keys_are_named():
    md = _md("bitnet-b1.58")
    del md["bitnet-b1.58.block_count"]
    with pytest.raises(ConfigError, match="block_count"):
        ModelConfig.from_gguf(md, SUBNORM_NAMES)
    with pytest.raises(ConfigError, match="mamba"):
        ModelConfig.from_gguf({"general.architecture": "mamba"}, set())


def test_invalid_dims_rejected_with_all_problems_listed():
    with pytest.raises(ConfigError, match="n_heads 20 is not a multiple of n_kv_heads 3"):
        ModelConfig.from_gguf(_md("bitnet-b1.58", **{"bitnet-b1.58.attention.head_count_kv": 3}), SUBNORM_NAMES)


def test_gguf_metadata_round_trip():
    c = ModelConfig.from_gguf(_md("bitnet-b1.58"), SUBNORM_NAMES)
    md = dict(c.gguf_metadata())
    md.update({"tokenizer.ggml.bos_token_id": 128000, "tokenizer.ggml.eos_token_id": 128001})
    c2 = ModelConfig.from_gguf(md, SUBNORM_NAMES)
    assert c2.replace(name=c.name) == c


def test_hf_config_of_the_real_checkpoint():
    c = ModelConfig.from_hf(REAL / "hf" / "config.json")
    # model_type "bitnet" with hidden_act silu: the 1bitLLM family (SiLU + sub-norms, tied).
    assert c.arch == "bitnet" and c.activation == "silu" and c.sub_norms and c.tied_output
    assert (c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn, c.vocab) == (256, 2, 4, 2, 768, 1000)
    assert c.rope_style == "neox" and c.rope_theta == 10000.0


def test_hf_config_2b4t_and_llama_families():
    two_b = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_size": 2560,
        "intermediate_size": 6912, "num_hidden_layers": 30, "num_attention_heads": 20,
        "num_key_value_heads": 5, "vocab_size": 128256, "hidden_act": "relu2",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001,
    }
    c = ModelConfig.from_hf(two_b)
    assert c.arch == "bitnet-b1.58" and c.activation == "relu2" and c.n_rep == 4
    falcon = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 18, "num_attention_heads": 8,
        "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 131072, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "rope_theta": 1000042.0, "eos_token_id": [11, 12],
    }
    c = ModelConfig.from_hf(falcon)
    assert c.arch == "llama" and c.head_dim == 256 and c.q_dim == 2048 and not c.tied_output
    assert c.rope_style == "norm" and c.eos_id == 11


def test_hf_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="hidden_size"):
        ModelConfig.from_hf({"num_attention_heads": 4})
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read config.json"):
        ModelConfig.from_hf(p)
    with pytest.raises(ConfigError, match="gelu"):
        ModelConfig.from_hf(json.loads('{"hidden_size":8,"num_attention_heads":2,"num_hidden_layers":1,'
                                       '"intermediate_size":8,"vocab_size":8,"hidden_act":"gelu"}'))


@pytest.mark.parametrize(
    "bad",
    [
        {"num_attention_heads": 0},
        {"num_attention_heads": "four"},
        {"rope_theta": "fast"},
        {"architectures": 7},
        {"rms_norm_eps": [1]},
    ],
)
def test_hf_config_bad_values_give_config_error(bad):
    cfg = {"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
           "intermediate_size": 8, "vocab_size": 8, "hidden_act": "silu"}
    cfg.update(bad)
    with pytest.raises(ConfigError):
        ModelConfig.from_hf(cfg)
    with pytest.raises(ConfigError, match="not an object"):
        ModelConfig.from_hf(json.loads("[1]"))
