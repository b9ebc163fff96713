"""Quantisation-aware BitNet b1.58 training on the JAX reference architecture (``bitnet-lab train``).

``config`` (the recipe and named presets), ``data`` (corpus, tokenizer, token files), ``checkpoint``
(resumable .npz), ``loop`` (the training loop), ``export`` (GGUF export; a checkpoint as a model).
JAX and optax are imported inside the functions that need them.
"""

from __future__ import annotations

from bitnet_lab.train.config import (
    ARCH,
    CKPT_NAME,
    EOT,
    LOG_NAME,
    PRE_TOKENIZER,
    PRESETS,
    RECIPE,
    say,
    SUMMARY_NAME,
    TOKENIZER_DIR,
    TrainConfig,
)
from bitnet_lab.train.data import (
    encode_documents,
    prepare_data,
    read_documents,
    save_tokenizer,
    TokenData,
    tokenizer_metadata,
    train_tokenizer,
)
from bitnet_lab.train.checkpoint import (
    identity_diff,
    load_checkpoint,
    save_checkpoint,
)
from bitnet_lab.train.loop import (
    train,
)
from bitnet_lab.train.export import (
    CheckpointModel,
    export_gguf,
    export_run,
    EXPORT_TYPES,
    is_checkpoint,
    provenance_metadata,
)

__all__ = [
    "EOT",
    "PRE_TOKENIZER",
    "ARCH",
    "CKPT_NAME",
    "LOG_NAME",
    "SUMMARY_NAME",
    "TOKENIZER_DIR",
    "RECIPE",
    "TrainConfig",
    "PRESETS",
    "say",
    "read_documents",
    "train_tokenizer",
    "save_tokenizer",
    "tokenizer_metadata",
    "encode_documents",
    "TokenData",
    "prepare_data",
    "save_checkpoint",
    "load_checkpoint",
    "identity_diff",
    "train",
    "provenance_metadata",
    "EXPORT_TYPES",
    "export_gguf",
    "export_run",
    "CheckpointModel",
    "is_checkpoint",
]
