"""A small quantisation-aware BitNet b1.58 trainer on the project's JAX reference architecture.

The recipe (BitNet b1.58 / the 2B-4T architecture, sized for a 2-core CPU):

- latent float32 weights; in the forward pass every projection is ternarised per tensor with
  absmean and its input quantised per token to int8 (absmax), evaluated as inference does it,
  with straight-through gradients (``bitnet_lab.reference.fakequant``, which runs the reference's
  own ``layers.decoder_layer``: RMSNorm, RoPE, GQA attention, relu²·u, sub-norms, tied lm_head);
- AdamW (optax) with linear warm-up and cosine decay, global-norm gradient clipping, weight decay
  on the projections and the embedding only;
- checkpoints (``ckpt.npz``: parameters, optimiser state, step) every N steps and at the end;
  rerunning the same command resumes from the checkpoint, bit for bit as if uninterrupted (the
  batch of step ``s`` is a pure function of ``(seed, s)``);
- ``fp=True``: the same architecture and budget in full precision (the quality baseline).

A run folder holds ``tokenizer/`` (a byte-level BPE trained on the corpus with the `tokenizers`
library), ``train.bin`` / ``valid.bin`` (the token ids, uint16, memory-mapped), ``ckpt.npz``,
``log.jsonl`` (the training curve) and ``summary.json``. ``export_gguf`` writes the trained model
as an I2_S (or TQ1_0 / TQ2_0) GGUF with the tokenizer in its metadata, readable by
``bitnet_lab.load`` like any other file.

The corpus is a folder written by ``scripts/gather_corpus.py`` (``train.jsonl`` / ``valid.jsonl``).

JAX and optax are imported inside the functions that need them (``import bitnet_lab`` stays light).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, ConfigError
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
    rounding: str = ternary.DEFAULT_ROUNDING  # activation rounding (numerics §2.5)
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


# =============================================================================================
# Corpus and tokenizer
# =============================================================================================


def read_documents(corpus: str | os.PathLike, split: str = "train") -> Iterator[str]:
    """The texts of ``<corpus>/<split>.jsonl`` (scripts/gather_corpus.py's format), in order."""
    path = Path(corpus).expanduser() / f"{split}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: gather the corpus first "
                          f"(python scripts/gather_corpus.py --out {Path(corpus)})")
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            try:
                doc = json.loads(line)
                text = doc["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}:{k}: not a corpus line ({type(e).__name__}: {e})") from None
            if not isinstance(text, str):
                raise ConfigError(f"{path}:{k}: 'text' is {type(text).__name__}, not a string")
            yield text


def train_tokenizer(corpus: str | os.PathLike | Iterable[str], vocab_size: int = 4096, *,
                    min_frequency: int = 2) -> Any:
    """Train a byte-level BPE (``tokenizers.Tokenizer``) of at most ``vocab_size`` tokens.

    ``corpus``: a corpus folder (its ``train.jsonl``) or an iterable of texts. Pre-tokenisation is
    the Llama-3 split regex followed by GPT-2's byte → character map, exactly what bitnet_lab's
    ``Tokenizer`` runs for ``tokenizer.ggml.pre = llama-bpe``; all 256 bytes are in the
    vocabulary (no unknown token); ``<|endoftext|>`` is the one special token (id 0).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from bitnet_lab.formats.vocab import LLAMA3_REGEX

    if vocab_size < 256 + 1 + 1:
        raise ConfigError(f"vocab_size {vocab_size} is too small for 256 bytes, {EOT} and one merge")
    texts = read_documents(corpus) if isinstance(corpus, (str, os.PathLike)) else iter(corpus)
    tok = Tokenizer(models.BPE(ignore_merges=True))  # llama-bpe runs with ignore_merges
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Any, folder: str | os.PathLike) -> Path:
    """Write ``tokenizer.json`` and a ``tokenizer_config.json`` naming the special token."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"bos_token": EOT, "eos_token": EOT, "eot_token": EOT, "add_bos_token": True,
           "add_eos_token": False, "model_max_length": None}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


def tokenizer_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The GGUF ``tokenizer.*`` keys of a saved tokenizer (``formats.vocab``'s converter)."""
    from bitnet_lab.formats.vocab import vocab_metadata_from_hf

    return vocab_metadata_from_hf(folder, pre=PRE_TOKENIZER)


def encode_documents(tokenizer: Any, docs: Iterable[str], path: str | os.PathLike) -> int:
    """Encode documents with a bitnet_lab ``Tokenizer`` into a uint16 file; returns the count.

    Layout: ``EOT doc₁ EOT doc₂ … EOT docₙ EOT`` — every document starts right after an
    ``<|endoftext|>``, as a prompt starts after the BOS the tokenizer adds.
    """
    eot = tokenizer.eot_id
    if eot is None:
        raise ConfigError(f"the tokenizer has no {EOT} token")
    if tokenizer.vocab_size > 65536:
        raise ConfigError(f"vocabulary of {tokenizer.vocab_size} tokens does not fit uint16")
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "wb") as f:
        f.write(np.array([eot], np.uint16).tobytes())
        n += 1
        for text in docs:
            ids = tokenizer.encode(text, add_bos=False, add_eos=False)
            ids.append(eot)
            f.write(np.asarray(ids, dtype=np.uint16).tobytes())
            n += len(ids)
    os.replace(tmp, path)
    return n


class TokenData:
    """Training windows over a memory-mapped uint16 token file.

    ``batch(step)`` draws ``batch`` windows of ``context + 1`` tokens at uniformly random starts
    from a generator seeded by ``(seed, step)``: the batch of a step never depends on what ran
    before it, which is what makes resuming exact.
    """

    def __init__(self, path: str | os.PathLike, context: int) -> None:
        self.path = Path(path)
        self.ids = np.memmap(self.path, dtype=np.uint16, mode="r")
        self.context = int(context)
        if len(self.ids) < self.context + 2:
            raise ConfigError(f"{self.path}: {len(self.ids)} tokens, fewer than one window of "
                              f"{self.context + 1} (+1) tokens; use a larger corpus or a shorter context")

    def __len__(self) -> int:
        return len(self.ids)

    def _windows(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.ids[starts[:, None] + np.arange(self.context + 1)].astype(np.int32)  # (B, T+1)
        return w[:, :-1], w[:, 1:]

    def batch(self, step: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)`` int32 (batch, context) for training step ``step``."""
        rng = np.random.default_rng([int(seed), int(step)])
        starts = rng.integers(0, len(self.ids) - self.context - 1, size=batch, endpoint=True)
        return self._windows(starts)

    def eval_windows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` windows at evenly spaced starts (the same ones at every evaluation)."""
        last = len(self.ids) - self.context - 1
        return self._windows(np.linspace(0, last, num=n).astype(np.int64))


def prepare_data(corpus: str | os.PathLike, run_dir: str | os.PathLike, vocab: int, *,
                 progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) the run's tokenizer and encode the corpus (or reuse the encoded files).

    Returns ``{"tokenizer_md", "tokenizer", "n_train", "n_valid", "corpus_manifest"}``.
    """
    from bitnet_lab.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    corpus = Path(corpus).expanduser()
    tok_dir = run_dir / TOKENIZER_DIR
    manifest_path = corpus / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    # What the tokenizer and the token files were made from: reusing them for another corpus or
    # vocabulary size would silently train on the wrong data.
    identity = {"vocab": int(vocab), "corpus": str(corpus),
                "corpus_sha256": manifest.get("sha256", {}).get("train.jsonl"),
                "valid_sha256": manifest.get("sha256", {}).get("valid.jsonl")}
    data_json = run_dir / "data.json"
    if data_json.is_file():
        before = json.loads(data_json.read_text())
        diff = [f"{k}: {before.get(k)!r} then, {identity[k]!r} now" for k in ("vocab", "corpus_sha256", "valid_sha256")
                if before.get(k) != identity[k]]
        if diff:
            raise ConfigError(f"{run_dir} was prepared from other data ({'; '.join(diff)}); use a new run folder")
    elif (tok_dir / "tokenizer.json").exists() or (run_dir / "train.bin").exists():
        raise ConfigError(f"{run_dir} holds a tokenizer or token files but no data.json saying what they were "
                          "made from; use a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    data_json.write_text(json.dumps(identity, indent=2) + "\n")
    if not (tok_dir / "tokenizer.json").is_file():
        _say(f"training a {vocab}-token byte-level BPE on {corpus / 'train.jsonl'} ...", progress)
        t0 = time.perf_counter()
        save_tokenizer(train_tokenizer(corpus, vocab), tok_dir)
        _say(f"tokenizer trained in {time.perf_counter() - t0:.1f} s", progress)
    md = tokenizer_metadata(tok_dir)
    tok = Tokenizer.from_metadata(md, source=str(tok_dir))
    counts = {}
    for split in ("train", "valid"):
        path = run_dir / f"{split}.bin"
        if not path.is_file():
            t0 = time.perf_counter()
            counts[split] = encode_documents(tok, read_documents(corpus, split), path)
            _say(f"{split}: {counts[split]:,} tokens in {time.perf_counter() - t0:.1f} s", progress)
        else:
            counts[split] = int(path.stat().st_size // 2)
    return {"tokenizer_md": md, "tokenizer": tok, "n_train": counts["train"], "n_valid": counts["valid"],
            "corpus_manifest": manifest}


# =============================================================================================
# Checkpoints
# =============================================================================================


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def save_checkpoint(path: str | os.PathLike, *, step: int, params: Mapping[str, Any], opt_leaves: list,
                    cfg: TrainConfig, state: Mapping[str, Any]) -> Path:
    """Write ``params`` (nested dict of arrays), the optimiser state's leaves and the run's
    config and counters to ``path`` (npz, atomically: a crash never leaves a torn file)."""
    path = Path(path)
    arrays = {f"param/{k}": np.asarray(v) for k, v in _flatten(params).items()}
    arrays.update({f"opt/{i:05d}": np.asarray(leaf) for i, leaf in enumerate(opt_leaves)})
    arrays["step"] = np.int64(step)
    arrays["train_config"] = np.array(json.dumps(cfg.to_dict(), sort_keys=True))
    arrays["state"] = np.array(json.dumps(dict(state), sort_keys=True))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"step", "params" (numpy), "opt_leaves", "cfg" (TrainConfig), "state"}`` of a checkpoint."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise BitnetLabError(f"cannot read checkpoint {path}: {e}") from None
    for key in ("step", "train_config", "state"):
        if key not in files:
            raise BitnetLabError(f"{path}: not a bitnet_lab training checkpoint (no {key!r})")
    params = _unflatten({k[len("param/"):]: v for k, v in files.items() if k.startswith("param/")})
    opt = [files[k] for k in sorted(k for k in files if k.startswith("opt/"))]
    return {"step": int(files["step"]), "params": params, "opt_leaves": opt,
            "cfg": TrainConfig.from_dict(json.loads(str(files["train_config"]))),
            "state": json.loads(str(files["state"]))}


def _identity_diff(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Fields that make two configs different runs (cadence fields excluded)."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: checkpoint {da[k]!r} vs now {db[k]!r}" for k in da
            if k not in TrainConfig.CADENCE and da[k] != db[k]]


# =============================================================================================
# Training
# =============================================================================================


def _say(msg: str, on: bool = True) -> None:
    if on:
        print(f"bitnet-lab train: {msg}", file=sys.stderr, flush=True)


def _optimizer(cfg: TrainConfig):
    """AdamW with warm-up + cosine decay and global-norm clipping; decay on matrices only."""
    import optax

    from bitnet_lab.reference.fakequant import PROJECTIONS

    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup,
        decay_steps=max(cfg.steps, cfg.warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)

    def decay_mask(params):
        # projections and the (tied) embedding decay; RMSNorm weights do not (they start at 1)
        return {"embed": True, "output_norm": False,
                "layers": {k: k in PROJECTIONS for k in params["layers"]}}

    opt = optax.chain(
        optax.clip_by_global_norm(cfg.clip),
        optax.adamw(schedule, b1=cfg.beta1, b2=cfg.beta2, eps=1e-8, weight_decay=cfg.weight_decay,
                    mask=decay_mask),
    )
    return opt, schedule


@lru_cache(maxsize=4)
def _compiled(cfg: TrainConfig, mcfg: ModelConfig):
    """``(step, evaluate, optimizer, schedule)``: the jitted training step and evaluation loss.

    Cached per (config, model config): a resumed run in the same process (tests, notebooks)
    reuses the compiled functions instead of compiling them again.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from bitnet_lab.reference import fakequant as FQ

    opt, schedule = _optimizer(cfg)
    kw = {"fp": cfg.fp, "rounding": cfg.rounding}

    def step(params, opt_state, x, y, nz):
        loss, grads = jax.value_and_grad(FQ.loss)(params, x, y, mcfg, neg_zero=nz, **kw)
        gnorm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, gnorm

    def evaluate(params, x, y, nz):
        return FQ.loss(params, x, y, mcfg, neg_zero=nz, **kw)

    return jax.jit(step, donate_argnums=(0, 1)), jax.jit(evaluate), opt, schedule


def _eval_loss(eval_fn, params, data: TokenData, cfg: TrainConfig, nz) -> float:
    """Mean held-out loss over ``cfg.eval_windows`` fixed windows, in batches of ``cfg.batch``."""
    x, y = data.eval_windows(cfg.eval_windows)
    total = 0.0
    for i in range(0, len(x), cfg.batch):  # a shorter last batch compiles once more, that is all
        xb, yb = x[i:i + cfg.batch], y[i:i + cfg.batch]
        total += float(eval_fn(params, xb, yb, nz)) * len(xb)
    return total / len(x)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint being resumed (a run that died mid-interval)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def train(cfg: TrainConfig, corpus: str | os.PathLike, run_dir: str | os.PathLike, *,
          restart: bool = False, stop_after: int | None = None, progress: bool = True,
          export: str | os.PathLike | None = None, outtype: str = "i2_s",
          embedding_type: str = "f16") -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir`` on ``corpus``; returns the run summary.

    ``restart``: ignore an existing checkpoint. ``stop_after``: stop (and checkpoint) after this
    many steps in this call — the run resumes later. ``export``: write the trained model as a
    GGUF there when the run is complete (quantised runs only).
    """
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from bitnet_lab.reference import fakequant as FQ

    if export is not None and cfg.fp:
        raise ConfigError("a full-precision run has no ternary weights to export; measure it with "
                          f"`bitnet-lab perplexity -m {run_dir}` instead")
    if export is not None and outtype not in EXPORT_TYPES:
        raise ConfigError(f"outtype {outtype!r} is not one of {', '.join(EXPORT_TYPES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_info = prepare_data(corpus, run_dir, cfg.vocab, progress=progress)
    tok = data_info["tokenizer"]
    name = f"bitnet_lab-stdlib-{'fp' if cfg.fp else 'b1.58'}"
    mcfg = cfg.model_config(tok.vocab_size, tok.eot_id, name=name)
    train_data = TokenData(run_dir / "train.bin", cfg.context)
    valid_data = TokenData(run_dir / "valid.bin", cfg.context)
    step_fn, eval_fn, opt, schedule = _compiled(cfg, mcfg)
    nz = jnp.asarray(np.float32(-0.0))  # runtime -0.0 for layers.rounded (never constant-folded)

    ckpt_path = run_dir / CKPT_NAME
    log_path = run_dir / LOG_NAME
    fresh_params = FQ.init_params(mcfg, cfg.seed, cfg.init_std)
    opt_state = opt.init(jax.tree.map(jnp.asarray, fresh_params))
    treedef = jax.tree_util.tree_structure(opt_state)
    # train_seconds: time inside the compiled steps (the first step of each call includes its
    # compilation); wall_seconds: the whole training loop, evaluations and checkpoints included
    state = {"tokens_seen": 0, "train_seconds": 0.0, "wall_seconds": 0.0}
    start = 0
    if ckpt_path.is_file() and not restart:
        ck = load_checkpoint(ckpt_path)
        diff = _identity_diff(ck["cfg"], cfg)
        if diff:
            raise ConfigError(f"{ckpt_path} belongs to a different run ({'; '.join(diff)}); "
                              "use another folder or --restart")
        if ck["step"] > cfg.steps:
            raise ConfigError(f"{ckpt_path} is at step {ck['step']}, past --steps {cfg.steps}")
        leaves = treedef.num_leaves
        if len(ck["opt_leaves"]) != leaves:
            raise BitnetLabError(f"{ckpt_path}: {len(ck['opt_leaves'])} optimiser arrays, expected {leaves}")
        params = jax.tree.map(jnp.asarray, ck["params"])
        opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in ck["opt_leaves"]])
        start, state = ck["step"], ck["state"]
        _truncate_log(log_path, start)
        _say(f"resuming {ckpt_path} at step {start}", progress)
    else:
        params = jax.tree.map(jnp.asarray, fresh_params)
        if log_path.exists():
            log_path.unlink()
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    _say(f"{'full-precision' if cfg.fp else 'ternary (QAT)'} {mcfg.n_layers} layers × H {mcfg.hidden}, "
         f"ffn {mcfg.ffn}, heads {mcfg.n_heads}/{mcfg.n_kv_heads}, vocab {mcfg.vocab}, ctx {mcfg.context}: "
         f"{n_params / 1e6:.2f} M parameters; {data_info['n_train']:,} training tokens, "
         f"{cfg.tokens_per_step:,} per step", progress)

    end = cfg.steps if stop_after is None else min(cfg.steps, start + int(stop_after))

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, step=step, params=jax.device_get(params),
                        opt_leaves=jax.device_get(jax.tree_util.tree_leaves(opt_state)), cfg=cfg, state=state)

    def log(entry: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    bar = tqdm(total=cfg.steps, initial=start, desc="train" + (" fp" if cfg.fp else " b1.58"),
               unit="step", disable=not progress, dynamic_ncols=True)
    window_loss, window_n, window_t, window_tokens = 0.0, 0, 0.0, 0
    shown_tps = float("nan")
    wall0, wall_before = time.perf_counter(), float(state.get("wall_seconds", 0.0))
    try:
        for step in range(start, end):
            x, y = train_data.batch(step, cfg.batch, cfg.seed)
            t0 = time.perf_counter()
            params, opt_state, loss, gnorm = step_fn(params, opt_state, x, y, nz)
            loss = float(loss)  # waits for the step: the timing below is the step's
            dt = time.perf_counter() - t0
            if not math.isfinite(loss):
                raise BitnetLabError(f"step {step + 1}: the loss is {loss}; lower --lr or raise --warmup")
            state["tokens_seen"] += cfg.tokens_per_step
            state["train_seconds"] += dt
            done = step + 1
            if step > start:  # the first step of a call includes compilation: not a throughput sample
                window_t += dt
                window_tokens += cfg.tokens_per_step
            window_loss += loss
            window_n += 1
            tps = window_tokens / window_t if window_t else float("nan")
            shown_tps = tps if window_t else shown_tps
            state["wall_seconds"] = wall_before + time.perf_counter() - wall0  # with eval, checkpoints
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{shown_tps:,.0f}", lr=f"{float(schedule(step)):.2e}")
            if done % cfg.log_every == 0 or done == end:
                log({"step": done, "loss": window_loss / window_n, "lr": float(schedule(step)),
                     "grad_norm": float(gnorm), "tok_per_s": None if math.isnan(tps) else tps,
                     "tokens": state["tokens_seen"], "train_seconds": state["train_seconds"]})
                window_loss, window_n, window_t, window_tokens = 0.0, 0, 0.0, 0
            if done % cfg.eval_every == 0 or done == cfg.steps:
                val = _eval_loss(eval_fn, params, valid_data, cfg, nz)
                log({"step": done, "val_loss": val})
                bar.write(f"step {done}: train loss {loss:.4f}, held-out loss {val:.4f} "
                          f"(ppl {math.exp(val):.2f})")
            if done % cfg.ckpt_every == 0 or done == end:
                checkpoint(done)
    finally:
        bar.close()

    if end == start:  # nothing to do (already complete): make sure a checkpoint exists
        if not ckpt_path.is_file():
            checkpoint(end)
    summary = {
        "complete": end == cfg.steps, "step": end, "train_config": cfg.to_dict(),
        "model_config": mcfg.to_dict(), "n_params": n_params, "tokens_seen": state["tokens_seen"],
        "train_seconds": state["train_seconds"], "wall_seconds": state.get("wall_seconds", 0.0),
        "n_train_tokens": data_info["n_train"],
        "n_valid_tokens": data_info["n_valid"], "corpus": data_info["corpus_manifest"].get("sha256", {}),
        "python": data_info["corpus_manifest"].get("python"),
    }
    curve = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()] if log_path.is_file() else []
    vals = [e["val_loss"] for e in curve if "val_loss" in e]
    if vals:
        summary["final_val_loss"] = vals[-1]
    (run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    if export is not None and summary["complete"]:
        export_gguf(jax.device_get(params), mcfg, data_info["tokenizer_md"], export, outtype=outtype,
                    embedding_type=embedding_type, extra_metadata=_provenance_metadata(summary))
        _say(f"wrote {export} ({Path(export).stat().st_size / 2**20:.2f} MiB)", progress)
        summary["export"] = str(export)
    return summary


def _provenance_metadata(summary: Mapping[str, Any]) -> dict[str, Any]:
    md = {
        "general.description": "A tiny BitNet b1.58 model trained by bitnet_lab on the CPython standard "
                               "library (PSF-2.0); see data/MODEL_CARD.md",
        "general.license": "PSF-2.0 (training data); model weights distributed under the same notice",
        "bitnet_lab.train.recipe": RECIPE,
        "bitnet_lab.train.steps": int(summary["step"]),
        "bitnet_lab.train.tokens_seen": int(summary["tokens_seen"]),
        "bitnet_lab.train.config": json.dumps(summary["train_config"], sort_keys=True),
    }
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
    from bitnet_lab.dummy import FILE_TYPE
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
    extra = _provenance_metadata(json.loads(summary_path.read_text())) if summary_path.is_file() else None
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
