"""Small shared helpers for the HF / convert / fuzz tests: paths, tiny random models, ulps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.formats.names import projection_of
from bitnet_lab.tensors import FloatTensor, TernaryWeight

REAL = Path(__file__).parent / "data" / "real-files"
REAL_HF = REAL / "hf"
REAL_I2S = REAL / "bitnet-i2_s.gguf"
REAL_F32 = REAL / "bitnet-f32.gguf"
REAL_TQ1 = REAL / "upstream-tq1_0.gguf"
REAL_TQ2 = REAL / "upstream-tq2_0.gguf"


def tiny_config(arch: str = "bitnet", *, hidden: int = 8, n_heads: int = 2, n_kv_heads: int = 1,
                ffn: int = 16, vocab: int = 16, n_layers: int = 1, tied: bool | None = None) -> ModelConfig:
    llama = arch == "llama"
    return ModelConfig(
        arch=arch, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        head_dim=hidden // n_heads, ffn=ffn, vocab=vocab, context=64, rope_theta=10000.0,
        rope_style="norm" if llama else "neox", norm_eps=1e-5,
        activation="relu2" if arch == "bitnet-b1.58" else "silu",
        sub_norms=not llama, tied_output=(not llama) if tied is None else tied,
        bos_id=1, eos_id=2, name=f"tiny-{arch}",
    )


def random_model(config: ModelConfig, seed: int = 0) -> dict:
    """GGUF-named tensors: int8 ternary projections with random γ, F32 floats."""
    rng = np.random.default_rng(seed)
    out = {}
    for g, shape in config.tensor_shapes().items():
        if projection_of(g):
            t = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=shape, p=[0.3, 0.4, 0.3])
            gamma = np.float32(rng.uniform(0.005, 2.0))
            out[g] = TernaryWeight(g, "int8", shape, t, scale=gamma)
        else:
            out[g] = FloatTensor(g, "F32", shape, rng.standard_normal(shape).astype(np.float32))
    return out


def ulps(a, b) -> int:
    """Signed distance in float32 ulps (same-sign finite values)."""
    return int(np.float32(a).view(np.int32)) - int(np.float32(b).view(np.int32))
