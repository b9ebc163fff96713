"""Start a run from a trained ternary model file instead of random weights (``train --init-from``).

The shipped models carry no latent (float) weights, only the ternary codes ``t`` and one scale
``γ`` per projection. The latent weights a fine-tune starts from are ``W = t · γ · n / nnz(t)``:
absmean ternarisation of that ``W`` gives back exactly ``t`` (every non-zero ``|W/γ'| ≥ 1``) and
``γ' = mean|W| = γ`` (to float rounding), so step 0 computes what the file computes; the
embedding (F16/F32), the norms and the tokenizer (its tokens, merges, special ids and any chat
template) are taken as they are.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.train.config import EOT, TrainConfig

# the tokenizer.* keys that must agree between the base file and the run's tokenizer
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.eot_token_id")


def latent_from_codes(t: np.ndarray, gamma: float) -> np.ndarray:
    """float32 ``t · γ · n / nnz(t)`` (see the module docstring)."""
    t = np.asarray(t, dtype=np.float32)
    nz = int(np.count_nonzero(t))
    if nz == 0:
        return np.zeros(t.shape, np.float32)
    return (t * np.float32(float(gamma) * t.size / nz)).astype(np.float32)


def read_base(path: str | os.PathLike) -> dict[str, Any]:
    """``{"config", "params" (fakequant.init_params layout, numpy), "metadata", "sha256", "path"}``
    of a ternary GGUF written by ``bitnet-lab train`` (or any file of the same architecture)."""
    from bitnet_lab.config import ModelConfig
    from bitnet_lab.formats.gguf import GGUFFile
    from bitnet_lab.reference.fakequant import norm_widths
    from bitnet_lab.tensors import TernaryWeight

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--init-from {path}: no such file")
    with GGUFFile(path) as f:
        md = dict(f.metadata)
        tensors = f.tensors()
        config = ModelConfig.from_gguf(md, tensors.keys())
        if config.arch != "bitnet-b1.58" or not config.tied_output or not config.sub_norms:
            raise ConfigError(f"--init-from {path}: a {config.arch} model; the trainer's architecture is "
                              "bitnet-b1.58 with sub-norms and a tied embedding")
        layers: dict[str, np.ndarray] = {}
        for name in config.projection_shapes():
            mats = []
            for i in range(config.n_layers):
                w = tensors[f"blk.{i}.{name}.weight"]
                if not isinstance(w, TernaryWeight):
                    raise ConfigError(f"--init-from {path}: blk.{i}.{name} is not ternary")
                mats.append(latent_from_codes(w.ternary_matrix(), w.gamma()))
            layers[name] = np.stack(mats)
        for name in norm_widths(config):
            layers[name] = np.stack([tensors[f"blk.{i}.{name}.weight"].to_numpy().astype(np.float32)
                                     for i in range(config.n_layers)])
        params = {"embed": tensors["token_embd.weight"].to_numpy().astype(np.float32).copy(),
                  "output_norm": tensors["output_norm.weight"].to_numpy().astype(np.float32).copy(),
                  "layers": layers}
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"config": config, "params": params, "metadata": md, "sha256": h.hexdigest(), "path": str(path)}


def check_shape(cfg: TrainConfig, base: Mapping[str, Any]) -> None:
    """ConfigError unless the run's architecture is the base model's."""
    c = base["config"]
    want = {"hidden": c.hidden, "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
            "ffn": c.ffn}   # the vocabulary is the file's tokenizer's (checked after prepare_data)
    diff = [f"{k} {getattr(cfg, k)} (the file has {v})" for k, v in want.items() if getattr(cfg, k) != v]
    if diff:
        raise ConfigError(f"--init-from {base['path']}: the run's shape differs: {', '.join(diff)}")


def hf_tokenizer(md: Mapping[str, Any]) -> Any:
    """The base file's byte-level BPE as a ``tokenizers.Tokenizer`` built like
    ``data.train_tokenizer``'s (same pre-tokenizer, decoder and special token)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    from bitnet_lab.formats.vocab import LLAMA3_REGEX
    from bitnet_lab.train.config import PRE_TOKENIZER

    if md.get("tokenizer.ggml.model") != "gpt2" or md.get("tokenizer.ggml.pre") != PRE_TOKENIZER:
        raise ConfigError(f"--init-from: the file's tokenizer is {md.get('tokenizer.ggml.model')!r} / "
                          f"{md.get('tokenizer.ggml.pre')!r}; the trainer's is 'gpt2' / {PRE_TOKENIZER!r}")
    tokens = list(md["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    if EOT not in tokens:
        raise ConfigError(f"--init-from: the file's vocabulary has no {EOT}")
    tok.add_special_tokens([EOT])
    return tok


def tokenizer_mismatch(base_md: Mapping[str, Any], run_md: Mapping[str, Any]) -> list[str]:
    """The tokenizer keys on which a run's tokenizer differs from the base file's."""
    def norm(v: Any) -> Any:
        return [x.item() if hasattr(x, "item") else x for x in v] if isinstance(v, (list, tuple, np.ndarray)) else v

    return [k for k in TOKENIZER_KEYS if norm(base_md.get(k)) != norm(run_md.get(k))]


def provenance(base: Mapping[str, Any]) -> dict[str, Any]:
    md = base["metadata"]
    return {"file": Path(base["path"]).name, "sha256": base["sha256"],
            "steps": md.get("bitnet_lab.train.steps"), "tokens_seen": md.get("bitnet_lab.train.tokens_seen")}
