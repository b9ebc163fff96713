"""``bitnet-lab train --init-from GGUF`` (bitnet_lab.train.init): a run that starts from a ternary
model file computes what the file computes at step 0, keeps its tokenizer, and carries a chat
template into its export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

from bitnet_lab import train as T  # noqa: E402
from bitnet_lab.errors import ConfigError  # noqa: E402
from bitnet_lab.formats.gguf import GGUFFile, read_metadata  # noqa: E402
from bitnet_lab.quant.ternary import absmean_ternarize  # noqa: E402
from bitnet_lab.train import init as I  # noqa: E402

CFG = T.PRESETS["tiny"].replace(steps=3, warmup=1, eval_every=3, ckpt_every=3, log_every=1)
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}{% endfor %}"
DOCS = [
    "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n    return a + b\n" * 20,
    "class Point:\n    \"\"\"A point in the plane.\"\"\"\n    def __init__(self, x, y):\n        self.x = x\n" * 20,
    "import os\n\nprint(os.path.join('a', 'b'))\n" * 20,
]


def _corpus(folder: Path, docs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in (("train", docs), ("valid", docs[:1])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"source": f"d{i}", "text": d}) + "\n"
                                                       for i, d in enumerate(ds)))
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    T.train(CFG, _corpus(d / "corpus", DOCS), d / "run", progress=False, export=d / "base.gguf")
    return d / "base.gguf"


def test_latent_weights_give_back_the_files_codes_and_scales(base):
    b = I.read_base(base)
    with GGUFFile(base) as f:
        for name, stack in b["params"]["layers"].items():
            for i, w in enumerate(stack):
                t = f.tensors()[f"blk.{i}.{name}.weight"]
                if name.endswith("norm"):
                    np.testing.assert_array_equal(w, t.to_numpy())
                    continue
                codes, gamma = absmean_ternarize(w)
                np.testing.assert_array_equal(codes, t.ternary())
                assert abs(float(gamma) / float(t.gamma()) - 1) < 1e-5


def test_a_fine_tune_keeps_the_tokenizer_and_stores_the_chat_template(base, tmp_path):
    # another corpus: a tokenizer trained on it would differ; the run must use the file's
    other = _corpus(tmp_path / "corpus", [d.upper() for d in DOCS])
    out = tmp_path / "ft.gguf"
    summary = T.train(CFG.replace(lr=1e-4), other, tmp_path / "run", progress=False, export=out,
                      init_from=base, chat_template=TEMPLATE)
    assert summary["init_from"]["file"] == base.name
    md, md0 = read_metadata(out), read_metadata(base)
    assert not I.tokenizer_mismatch(md0, md)
    assert md["tokenizer.chat_template"] == TEMPLATE
    assert json.loads(md["bitnet_lab.train.init_from"])["sha256"] == summary["init_from"]["sha256"]
    # the template travels on: a fine-tune of the fine-tune gets it without being told
    again = T.train(CFG.replace(lr=1e-4), other, tmp_path / "run2", progress=False, export=tmp_path / "ft2.gguf",
                    init_from=out)
    assert read_metadata(tmp_path / "ft2.gguf")["tokenizer.chat_template"] == TEMPLATE
    assert again["complete"]


def test_a_shape_mismatch_is_refused(base, tmp_path):
    with pytest.raises(ConfigError, match="shape differs"):
        T.train(CFG.replace(n_layers=3), _corpus(tmp_path / "c", DOCS), tmp_path / "run", progress=False,
                init_from=base)
