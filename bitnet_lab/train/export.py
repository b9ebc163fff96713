"""Export a trained run to GGUF, and read a checkpoint as a model (perplexity of runs)."""


from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError
from bitnet_lab.train.checkpoint import load_checkpoint
from bitnet_lab.train.config import CKPT_NAME, RECIPE, SUMMARY_NAME, TOKENIZER_DIR
from bitnet_lab.train.data import tokenizer_metadata


def provenance_metadata(summary: Mapping[str, Any]) -> dict[str, Any]:
    md = {
        "general.description": "A tiny BitNet b1.58 model trained by bitnet_lab on the CPython standard "
                               "library (PSF-2.0); see data/MODEL_CARD.md",
        "general.license": "PSF-2.0 (training data); model weights distributed under the same notice",
        "bitnet_lab.train.recipe": RECIPE,
        "bitnet_lab.train.steps": int(summary["step"]),
        "bitnet_lab.train.tokens_seen": int(summary["tokens_seen"]),
        "bitnet_lab.train.config": json.dumps(summary["train_config"], sort_keys=True),
    }
    if summary.get("init_from"):   # a fine-tune (train --init-from): steps and tokens above are its own
        md["bitnet_lab.train.init_from"] = json.dumps(summary["init_from"], sort_keys=True)
    if summary.get("python"):
        md["bitnet_lab.train.corpus"] = f"CPython {summary['python']} standard library; train.jsonl sha256 " \
                                        f"{summary['corpus'].get('train.jsonl', '?')}"
    return md


# =============================================================================================
# Export to GGUF
# =============================================================================================

EXPORT_TYPES = {"i2_s": "I2_S", "tq1_0": "TQ1_0", "tq2_0": "TQ2_0"}


def export_gguf(params: Mapping[str, Any], config: ModelConfig, tokenizer_md: Mapping[str, Any],
                path: str | os.PathLike, *, outtype: str = "i2_s", embedding_type: str = "f16",
                extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Write latent ``params`` (numpy, ``fakequant.init_params`` layout) as a GGUF model.

    Projections are ternarised with the project's numerics policy
    (``quant.absmean_ternarize``: γ = mean|W| per tensor) and packed as ``outtype`` (I2_S, or TQ1_0 /
    TQ2_0 with every block scale = fp16(γ)); the tied embedding is F16 or F32, norms F32.
    """
    from bitnet_lab.tools.dummy import FILE_TYPE
    from bitnet_lab.formats.gguf_writer import GGUFWriter
    from bitnet_lab.quant import packing
    from bitnet_lab.quant.ternary import absmean_ternarize

    if outtype not in EXPORT_TYPES:
        raise ConfigError(f"outtype {outtype!r} is not one of {', '.join(EXPORT_TYPES)}")
    if embedding_type not in ("f16", "f32"):
        raise ConfigError(f"embedding_type {embedding_type!r} is not f16 or f32")
    layers = params["layers"]
    md: dict[str, Any] = dict(config.gguf_metadata())
    md["general.file_type"] = FILE_TYPE[outtype]
    md["general.quantization_version"] = 2
    md.update(tokenizer_md)
    md.update(extra_metadata or {})
    if len(tokenizer_md.get("tokenizer.ggml.tokens", ())) != config.vocab:
        raise ConfigError(f"the tokenizer has {len(tokenizer_md.get('tokenizer.ggml.tokens', ()))} tokens, "
                          f"the model {config.vocab}")
    w = GGUFWriter(path)
    for k, v in md.items():
        w.add_metadata(k, v)
    emb = np.asarray(params["embed"], np.float32)
    if emb.shape != (config.vocab, config.hidden):
        raise ConfigError(f"embed: shape {emb.shape}, the config implies {(config.vocab, config.hidden)}")
    w.add_tensor_array("token_embd.weight", embedding_type.upper(), emb)
    shapes = config.projection_shapes()
    from bitnet_lab.reference.fakequant import norm_widths

    for i in range(config.n_layers):
        for name, n in norm_widths(config).items():
            a = np.asarray(layers[name][i], np.float32)
            if a.shape != (n,):
                raise ConfigError(f"blk.{i}.{name}: shape {a.shape}, expected {(n,)}")
            w.add_tensor_array(f"blk.{i}.{name}.weight", "F32", a)
        for name, (M, K) in shapes.items():
            latent = np.asarray(layers[name][i], np.float32)
            if latent.shape != (M, K):
                raise ConfigError(f"blk.{i}.{name}: shape {latent.shape}, expected {(M, K)}")
            t, gamma = absmean_ternarize(latent)
            w.add_tensor(f"blk.{i}.{name}.weight", EXPORT_TYPES[outtype], (M, K),
                         lambda t=t, g=gamma: packing.pack(outtype, t, scale=g))
    w.add_tensor_array("output_norm.weight", "F32", np.asarray(params["output_norm"], np.float32))
    return w.write()


def export_run(run_dir: str | os.PathLike, path: str | os.PathLike, *, outtype: str = "i2_s",
               embedding_type: str = "f16") -> Path:
    """Export the checkpoint of a run folder (its tokenizer included) to a GGUF."""
    run_dir = Path(run_dir)
    ck = load_checkpoint(run_dir / CKPT_NAME)
    if ck["cfg"].fp:
        raise ConfigError(f"{run_dir} is a full-precision run: nothing ternary to export")
    md = tokenizer_metadata(run_dir / TOKENIZER_DIR)
    cfg = ck["cfg"]
    eot = md.get("tokenizer.ggml.eot_token_id", md.get("tokenizer.ggml.eos_token_id"))
    mcfg = cfg.model_config(len(md["tokenizer.ggml.tokens"]), eot, name="bitnet_lab-stdlib-b1.58")
    summary_path = run_dir / SUMMARY_NAME
    extra = provenance_metadata(json.loads(summary_path.read_text())) if summary_path.is_file() else None
    return export_gguf(ck["params"], mcfg, md, path, outtype=outtype, embedding_type=embedding_type,
                       extra_metadata=extra)


# =============================================================================================
# A checkpoint as a model (perplexity of runs, including the full-precision baseline)
# =============================================================================================


class CheckpointModel:
    """A training checkpoint behind the forward interface's ``logits(ids)``: the trainer's own
    forward (fake-quant, or full precision for ``fp`` runs) in f32. ``config``, ``tokenizer``."""

    def __init__(self, run_or_ckpt: str | os.PathLike) -> None:
        import jax
        import jax.numpy as jnp

        from bitnet_lab.reference import fakequant as FQ
        from bitnet_lab.tokenizer import Tokenizer

        p = Path(run_or_ckpt)
        ckpt = p / CKPT_NAME if p.is_dir() else p
        run_dir = ckpt.parent
        ck = load_checkpoint(ckpt)
        md = tokenizer_metadata(run_dir / TOKENIZER_DIR)
        self.tokenizer = Tokenizer.from_metadata(md, source=str(run_dir / TOKENIZER_DIR))
        cfg = self.train_config = ck["cfg"]
        self.config = cfg.model_config(self.tokenizer.vocab_size, self.tokenizer.eot_id,
                                       name=f"checkpoint {ckpt} step {ck['step']}")
        self.step = ck["step"]
        self.source = ckpt
        self._params = jax.tree.map(jnp.asarray, ck["params"])
        mcfg = self.config
        self._fwd = jax.jit(lambda prm, ids: FQ.forward(prm, ids, mcfg, fp=cfg.fp, rounding=cfg.rounding))

    def logits(self, ids) -> np.ndarray:
        """Logits (T, vocab) float32 of one sequence from position 0."""
        a = np.asarray(ids, dtype=np.int32)[None, :]
        return np.asarray(self._fwd(self._params, a))[0]

    def __repr__(self) -> str:
        kind = "full-precision" if self.train_config.fp else "fake-quant b1.58"
        return f"CheckpointModel({kind}, step {self.step}, {self.source})"


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True for a training run folder (with ``ckpt.npz``) or a ``.npz`` checkpoint file."""
    p = Path(path)
    return (p.is_dir() and (p / CKPT_NAME).is_file()) or (p.is_file() and p.suffix == ".npz")
