"""Checkpoints: parameters, optimiser state and step in one .npz, resumable bit for bit."""


from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from bitnet_lab.errors import BitnetLabError
from bitnet_lab.train.config import TrainConfig


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


def identity_diff(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Fields that make two configs different runs (cadence fields excluded)."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: checkpoint {da[k]!r} vs now {db[k]!r}" for k in da
            if k not in TrainConfig.CADENCE and da[k] != db[k]]
