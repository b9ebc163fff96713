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

import json
import math
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import BitnetLabError, ConfigError
from bitnet_lab.train.checkpoint import identity_diff, load_checkpoint, save_checkpoint
from bitnet_lab.train.config import CKPT_NAME, LOG_NAME, SUMMARY_NAME, TrainConfig, say
from bitnet_lab.train.data import TokenData, prepare_data
from bitnet_lab.train.export import EXPORT_TYPES, export_gguf, provenance_metadata


# =============================================================================================
# Training
# =============================================================================================


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
          embedding_type: str = "f16", init_from: str | os.PathLike | None = None,
          chat_template: str | None = None) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir`` on ``corpus``; returns the run summary.

    ``restart``: ignore an existing checkpoint. ``stop_after``: stop (and checkpoint) after this
    many steps in this call — the run resumes later. ``export``: write the trained model as a
    GGUF there when the run is complete (quantised runs only). ``init_from``: a ternary GGUF of
    the same shape to fine-tune: its weights replace the random initialisation and its tokenizer
    (with its chat template) is the run's (``bitnet_lab.train.init``). ``chat_template``: a Jinja
    chat template stored with the run's tokenizer, hence in the exported GGUF.
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
    base = None
    if init_from is not None:
        from bitnet_lab.train import init as base_init

        base = base_init.read_base(init_from)
        base_init.check_shape(cfg, base)
        if chat_template is None:
            chat_template = base["metadata"].get("tokenizer.chat_template")
    run_dir.mkdir(parents=True, exist_ok=True)
    data_info = prepare_data(corpus, run_dir, cfg.vocab, progress=progress,
                             tokenizer=None if base is None else base_init.hf_tokenizer(base["metadata"]),
                             chat_template=chat_template, restart=restart)
    if base is not None and base_init.tokenizer_mismatch(base["metadata"], data_info["tokenizer_md"]):
        raise ConfigError(f"{run_dir}/tokenizer is not the tokenizer of {init_from} "
                          f"({', '.join(base_init.tokenizer_mismatch(base['metadata'], data_info['tokenizer_md']))}); "
                          "use a new run folder")
    if chat_template is not None and data_info["tokenizer_md"].get("tokenizer.chat_template") != chat_template:
        raise ConfigError(f"{run_dir}/tokenizer has another chat template than the one given; use a new run folder")
    tok = data_info["tokenizer"]
    name = f"bitnet_lab-stdlib-{'fp' if cfg.fp else 'b1.58'}"
    mcfg = cfg.model_config(tok.vocab_size, tok.eot_id, name=name)
    train_data = TokenData(run_dir / "train.bin", cfg.context)
    valid_data = TokenData(run_dir / "valid.bin", cfg.context)
    step_fn, eval_fn, opt, schedule = _compiled(cfg, mcfg)
    nz = jnp.asarray(np.float32(-0.0))  # runtime -0.0 for layers.rounded (never constant-folded)

    ckpt_path = run_dir / CKPT_NAME
    log_path = run_dir / LOG_NAME
    fresh_params = FQ.init_params(mcfg, cfg.seed, cfg.init_std) if base is None else base["params"]
    opt_state = opt.init(jax.tree.map(jnp.asarray, fresh_params))
    treedef = jax.tree_util.tree_structure(opt_state)
    # train_seconds: time inside the compiled steps (the first step of each call includes its
    # compilation); wall_seconds: the whole training loop, evaluations and checkpoints included
    state = {"tokens_seen": 0, "train_seconds": 0.0, "wall_seconds": 0.0}
    start = 0
    if ckpt_path.is_file() and not restart:
        ck = load_checkpoint(ckpt_path)
        diff = identity_diff(ck["cfg"], cfg)
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
        say(f"resuming {ckpt_path} at step {start}", progress)
    else:
        params = jax.tree.map(jnp.asarray, fresh_params)
        if log_path.exists():
            log_path.unlink()
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    say(f"{'full-precision' if cfg.fp else 'ternary (QAT)'} {mcfg.n_layers} layers × H {mcfg.hidden}, "
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
    if base is not None:
        summary["init_from"] = base_init.provenance(base)
    curve = [json.loads(ln) for ln in log_path.read_text().splitlines() if ln.strip()] if log_path.is_file() else []
    vals = [e["val_loss"] for e in curve if "val_loss" in e]
    if vals:
        summary["final_val_loss"] = vals[-1]
    (run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    if export is not None and summary["complete"]:
        export_gguf(jax.device_get(params), mcfg, data_info["tokenizer_md"], export, outtype=outtype,
                    embedding_type=embedding_type, extra_metadata=provenance_metadata(summary))
        say(f"wrote {export} ({Path(export).stat().st_size / 2**20:.2f} MiB)", progress)
        summary["export"] = str(export)
    return summary


