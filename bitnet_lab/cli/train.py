"""`bitnet-lab train`: quantisation-aware training of a small BitNet b1.58 model (bitnet_lab.train).

    python scripts/gather_corpus.py                       # the corpus, once (no download)
    bitnet-lab train --out runs/default --export data/default-model.gguf
    bitnet-lab train --out runs/default-fp --fp           # the full-precision baseline

Rerunning the same command resumes from ``<out>/ckpt.npz`` (``--restart`` starts over); a
finished run only re-exports. Needs JAX and optax (``pip install -e .[train]``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bitnet_lab.errors import ConfigError

# flag -> TrainConfig field, for the overrides of a preset
_OVERRIDES = {
    "hidden": int, "n_layers": int, "n_heads": int, "n_kv_heads": int, "ffn": int, "vocab": int, "context": int,
    "steps": int, "batch": int, "lr": float, "warmup": int, "min_lr_ratio": float, "weight_decay": float,
    "clip": float, "seed": int, "ckpt_every": int, "eval_every": int, "eval_windows": int, "log_every": int,
}
_FLAG_NAMES = {"n_layers": "layers", "n_heads": "heads", "n_kv_heads": "kv-heads", "context": "ctx"}


def default_corpus() -> Path:
    """Where scripts/gather_corpus.py writes by default."""
    cache = os.environ.get("BITNET_LAB_CACHE")
    return Path(cache) / "corpus" if cache else Path.home() / ".cache" / "bitnet_lab" / "corpus"


def add_parser(sub: Any) -> None:
    from bitnet_lab.train.export import EXPORT_TYPES
    from bitnet_lab.train.config import PRESETS

    p = sub.add_parser(
        "train", help="train a small BitNet b1.58 model (quantisation-aware, JAX)",
        description="Quantisation-aware training (BitNet b1.58 recipe) of the reference architecture on a "
                    "corpus gathered by scripts/gather_corpus.py; resumable; exports an I2_S GGUF.")
    p.add_argument("--corpus", default=str(default_corpus()), metavar="DIR",
                   help=f"corpus folder with train.jsonl / valid.jsonl (default {default_corpus()})")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="run folder (tokenizer, token files, "
                   "checkpoint, log)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="named configuration; the flags below override its fields (default: default)")
    g = p.add_argument_group("overrides of the preset")
    for field, typ in _OVERRIDES.items():
        flag = "--" + _FLAG_NAMES.get(field, field).replace("_", "-")
        g.add_argument(flag, dest=field, type=typ, default=None, metavar="N" if typ is int else "X")
    g.add_argument("--fp", action="store_true", help="full-precision baseline (same architecture, no quantisation)")
    r = p.add_argument_group("run")
    r.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    r.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (with a checkpoint) after N steps of this call; rerun to continue")
    r.add_argument("--init-from", metavar="GGUF", help="fine-tune a ternary model of the same shape: start from "
                   "its weights (latent t·γ·n/nnz(t)) and its tokenizer instead of random ones")
    r.add_argument("--chat-template", metavar="FILE", help="a Jinja chat template to store with the run's tokenizer "
                   "(and so in the exported GGUF's tokenizer.chat_template)")
    r.add_argument("--export", metavar="GGUF", help="write the finished model here (ternary runs)")
    r.add_argument("--outtype", choices=sorted(EXPORT_TYPES), default="i2_s", help="ternary type (default i2_s)")
    r.add_argument("--embedding-type", choices=("f16", "f32"), default="f16",
                   help="token embedding type (default f16)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=train_command)


def config_from_args(args: argparse.Namespace):
    """The preset with the given overrides applied."""
    from bitnet_lab.train.config import PRESETS

    changes = {f: getattr(args, f) for f in _OVERRIDES if getattr(args, f, None) is not None}
    if args.fp:
        changes["fp"] = True
    return PRESETS[args.preset].replace(**changes)


def train_command(args: argparse.Namespace) -> int:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"bitnet-lab train needs JAX and optax ({e}); pip install -e '.[train]'") from None
    from bitnet_lab.train.loop import train

    if args.stop_after is not None and args.stop_after <= 0:
        raise ConfigError(f"--stop-after must be positive, got {args.stop_after}")
    cfg = config_from_args(args)
    template = None
    if args.chat_template:
        try:
            template = Path(args.chat_template).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"--chat-template {args.chat_template}: {e.strerror or e}") from None
    summary = train(cfg, args.corpus, args.out, restart=args.restart, stop_after=args.stop_after,
                    progress=not args.no_progress, export=args.export, outtype=args.outtype,
                    embedding_type=args.embedding_type, init_from=args.init_from, chat_template=template)
    state = "complete" if summary["complete"] else f"stopped at step {summary['step']} of {cfg.steps}"
    val = summary.get("final_val_loss")
    print(f"run {args.out}: {state}; {summary['tokens_seen']:,} tokens in {summary['train_seconds'] / 60:.1f} min"
          + (f"; held-out loss {val:.4f}" if val is not None else ""))
    return 0
