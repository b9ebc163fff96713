"""Training configuration: the recipe's constants and the named TrainConfig presets."""


from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Mapping


from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError
from bitnet_lab.quant import ternary


EOT = "<|endoftext|>"  # the one special token: document separator, BOS and end of generation
PRE_TOKENIZER = "llama-bpe"  # the Llama-3 split regex (tokenizer.py runs it for this name)
ARCH = "bitnet-b1.58"
CKPT_NAME = "ckpt.npz"
LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
TOKENIZER_DIR = "tokenizer"
RECIPE = ("BitNet b1.58 quantisation-aware training: absmean ternary weights per tensor, per-token "
          "absmax int8 activations, straight-through estimator; AdamW, warm-up + cosine decay, "
          "gradient clipping")


# =============================================================================================
# Configuration
# =============================================================================================


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the model's shape, the optimiser, the data)."""

    # model (bitnet-b1.58 architecture: relu², sub-norms, tied embedding, RoPE neox)
    hidden: int = 256
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn: int = 768
    vocab: int = 4096               # tokenizer size asked for (a tiny corpus may give fewer)
    context: int = 256              # training sequence length (and the model's context_length)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # optimisation
    steps: int = 1500
    batch: int = 16                 # sequences per step (tokens per step = batch · context)
    lr: float = 3e-3                # peak learning rate
    min_lr_ratio: float = 0.1       # cosine decay ends at lr · min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0               # global gradient-norm clip
    init_std: float = 0.02
    fp: bool = False                # full-precision baseline (no quantisation)
    # activation rounding (docs/numerics.md#25-rounding-modes-at-a-glance)
    rounding: str = ternary.DEFAULT_ROUNDING
    seed: int = 0
    # cadence (not part of the run's identity: may change between resumes)
    ckpt_every: int = 100
    eval_every: int = 100
    eval_windows: int = 64          # held-out windows of `context` tokens per evaluation
    log_every: int = 10

    CADENCE = ("steps", "ckpt_every", "eval_every", "eval_windows", "log_every")

    def __post_init__(self) -> None:
        problems = []
        for f in ("hidden", "n_layers", "n_heads", "n_kv_heads", "ffn", "vocab", "context", "steps", "batch",
                  "ckpt_every", "eval_every", "eval_windows", "log_every"):
            if int(getattr(self, f)) <= 0:
                problems.append(f"{f} must be positive, got {getattr(self, f)}")
        if self.warmup < 0 or not 0 <= self.min_lr_ratio <= 1 or self.lr <= 0:
            problems.append(f"lr {self.lr}, warmup {self.warmup}, min_lr_ratio {self.min_lr_ratio} out of range")
        if not problems:
            if self.hidden % self.n_heads:
                problems.append(f"hidden {self.hidden} is not a multiple of n_heads {self.n_heads}")
            if self.n_heads % self.n_kv_heads:
                problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
            # I2_S packs 128-weight blocks along K: every projection input (hidden, ffn) must fit.
            for f in ("hidden", "ffn"):
                if getattr(self, f) % 128:
                    problems.append(f"{f} {getattr(self, f)} must be a multiple of 128 (I2_S blocks)")
            if self.vocab > 65535:
                problems.append(f"vocab {self.vocab} does not fit the uint16 token files")
        if self.rounding not in ternary.ROUNDING_MODES:
            problems.append(f"rounding {self.rounding!r} is not one of {ternary.ROUNDING_MODES}")
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.context

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**d)

    def model_config(self, vocab: int, eot_id: int, name: str = "") -> ModelConfig:
        """The ModelConfig of this run (``vocab`` and ``eot_id`` come from the trained tokenizer)."""
        return ModelConfig(
            arch=ARCH, hidden=self.hidden, n_layers=self.n_layers, n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads, head_dim=self.head_dim, ffn=self.ffn, vocab=int(vocab),
            context=self.context, rope_theta=float(self.rope_theta), rope_style="neox",
            norm_eps=float(self.norm_eps), activation="relu2", sub_norms=True, tied_output=True,
            bos_id=eot_id, eos_id=eot_id, eot_id=eot_id, name=name,
        )


# Named configurations. "default" is the shipped model's: 5.8 M parameters (4.7 M ternary),
# 1500 steps × 4096 tokens = 6.1 M tokens (≈ 2.3 passes over the CPython 3.11 corpus), sized to
# train in about 45–55 minutes on the project's quiet 2-core machine (calibration in
# data/MODEL_CARD.md). "tiny" is for tests and smoke runs.
PRESETS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "tiny": TrainConfig(hidden=128, n_layers=2, n_heads=2, n_kv_heads=1, ffn=256, vocab=512, context=64,
                        steps=20, batch=4, lr=3e-3, warmup=4, ckpt_every=10, eval_every=10,
                        eval_windows=4, log_every=1),
}


def say(msg: str, on: bool = True) -> None:
    if on:
        print(f"bitnet-lab train: {msg}", file=sys.stderr, flush=True)
