"""Draw the default model's training curves (data/training-curve.png) from the trainer's logs.

    python scripts/plot_training_curve.py [--ternary data/training-logs/default.jsonl]
                                          [--fp data/training-logs/default-fp.jsonl]
                                          [-o data/training-curve.png]

The logs are the ``log.jsonl`` files `bitnet-lab train` writes into its run folder (one JSON
object per line: ``loss`` every ``log_every`` steps, ``val_loss`` every ``eval_every`` steps);
copies of the two runs of the shipped model live in ``data/training-logs/``. Needs matplotlib
(``pip install -e '.[notebook]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_log(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, held-out loss) pairs of one run, in step order."""
    train, held_out = [], []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            train.append((int(row["step"]), float(row["loss"])))
        if "val_loss" in row:
            held_out.append((int(row["step"]), float(row["val_loss"])))
    return sorted(train), sorted(held_out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ternary", type=Path, default=ROOT / "data/training-logs/default.jsonl")
    ap.add_argument("--fp", type=Path, default=ROOT / "data/training-logs/default-fp.jsonl")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "data/training-curve.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for path, label, color in ((args.ternary, "b1.58 (ternary, int8 activations)", "tab:blue"),
                               (args.fp, "full precision (same budget)", "tab:orange")):
        if not path.exists():
            print(f"skipping {label}: {path} not found")
            continue
        train, held_out = read_log(path)
        ax.plot(*zip(*train), color=color, alpha=0.45, lw=1, label=f"{label}: training loss")
        ax.plot(*zip(*held_out), color=color, marker="o", ms=3, lw=1.6, label=f"{label}: held-out loss")
    ax.set_title("bitnet_lab default model: training curves (1500 steps × 16 × 256 tokens)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_ylim(2.5, 8.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
