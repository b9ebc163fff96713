"""Every GGUF in tests/data/real-files (written by bitnet.cpp's and llama.cpp's own tools, see its
README) loads with ``bitnet_lab.load``, runs on the native engine and on the reference, and
passes ``verify``: the F32 converter output, bitnet.cpp's I2_S with an F16 embedding, its 2026
I2_S files with a Q6_K or Q8_0 embedding (which is also the tied lm_head), upstream's TQ2_0 and
TQ1_0.

The kernel tier runs on the best ISA level only and the model tier for two steps: every level and
thread count is covered by test_verify.py; what this file adds is each real file's tensor types.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import cli, kernels

pytest.importorskip("jax")
from bitnet_lab.verify import verify  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
# file → the type of its token embedding (= the tied lm_head) and of its projections
REAL_GGUFS = {
    "bitnet-f32.gguf": ("F32", "F32"),
    "bitnet-i2_s.gguf": ("F16", "I2_S"),
    "bitnetcpp2026-i2_s-embd-q6_k.gguf": ("Q6_K", "I2_S"),
    "bitnetcpp2026-i2_s-embd-q8_0.gguf": ("Q8_0", "I2_S"),
    "upstream-tq2_0.gguf": ("F16", "TQ2_0"),
    "upstream-tq1_0.gguf": ("F16", "TQ1_0"),
}
IDS = [1, 5, 9, 100, 200, 300, 17, 3, 999, 42]


def test_every_real_gguf_is_listed():
    assert sorted(p.name for p in REAL.glob("*.gguf")) == sorted(REAL_GGUFS)


@pytest.mark.parametrize("name", list(REAL_GGUFS))
def test_real_file_loads_and_runs_on_both_backends(name):
    emb_type, proj_type = REAL_GGUFS[name]
    native = bitnet_lab.load(REAL / name, backend="native")
    reference = bitnet_lab.load(REAL / name, backend="reference")
    try:
        assert native.tensors["token_embd.weight"].ggml_type == emb_type
        assert "output.weight" not in native.tensors  # tied: the embedding is the lm_head
        from bitnet_lab.formats.gguf import GGUFFile

        assert GGUFFile(REAL / name).tensor_info("blk.0.attn_q.weight").type_name == proj_type
        a, b = native.logits(IDS), reference.logits(IDS)
        assert a.shape == b.shape == (len(IDS), 1000) and np.isfinite(a).all()
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
        assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    finally:
        native.close()
        reference.close()


@pytest.mark.parametrize("name", list(REAL_GGUFS))
def test_real_file_passes_verify(name):
    rep = verify(REAL / name, n=2, threads=2, isas=[kernels.available_isas()[-1]], progress=False)
    assert rep.passed, rep.to_text()


def test_cli_verify_passes_on_the_q6_k_file(capsys):
    """`bitnet-lab verify` on the file `setup_env.py --quant-embd` now produces: exit status 0."""
    rc = cli.main(["verify", "-m", str(REAL / "bitnetcpp2026-i2_s-embd-q6_k.gguf"), "-n", "2", "-t", "2",
                   "--isa", kernels.available_isas()[-1], "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "RESULT: PASS" in out
