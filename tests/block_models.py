"""Models whose TQ block scales differ, like a TQ file llama.cpp quantises from a latent checkpoint
(every 256-weight block of every row ternarised with its own scale; here its absmean). Shared by the engine tests
of the block epilogue and of the llama.cpp profile's projection."""

from __future__ import annotations

import numpy as np

from bitnet_lab.quant import packing
from bitnet_lab.tensors import TernaryWeight
from bitnet_lab.tools.testing import tiny_model


def per_block_absmean(name: str, w_latent: np.ndarray, layout: str) -> TernaryWeight:
    """Ternarise latent weights (M, K) block by block: γ_b = mean |w| over the 256-block,
    t = clamp(round(w / γ_b), −1, 1), d_b = fp16(γ_b) (BitNet's absmean rule per block; upstream's
    TQ quantiser takes each block's absmax instead: either way one scale per block)."""
    M, K = w_latent.shape
    blocks = w_latent.reshape(M, K // 256, 256).astype(np.float32)
    gamma = np.mean(np.abs(blocks), axis=2)
    d = gamma.astype(np.float16)
    t = np.clip(np.round(blocks / np.maximum(gamma[..., None], 1e-8)), -1, 1).astype(np.int8).reshape(M, K)
    return TernaryWeight(name, layout, (M, K), packing.pack(layout, t, block_scales=d), block_scales=d)


def latent_model(layouts=("tq2_0", "tq1_0"), i2s_names=(), seed=8):
    """A tiny bitnet-b1.58 model (H 256, I 512) whose projections are latent Gaussian weights
    quantised per block (alternating ``layouts``); ``i2s_names``: projections kept per-tensor I2_S."""
    config, tensors = tiny_model("bitnet-b1.58", seed=seed, hidden=256, ffn=512, layout="i2_s")
    rng = np.random.default_rng(seed)
    tensors = dict(tensors)
    k = 0
    for name, w in list(tensors.items()):
        if not isinstance(w, TernaryWeight) or name in i2s_names:
            continue
        M, K = w.shape
        latent = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.01, 0.1, (M, 1)).astype(np.float32)
        tensors[name] = per_block_absmean(name, latent, layouts[k % len(layouts)])
        k += 1
    return config, tensors
