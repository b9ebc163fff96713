"""bitnet_lab.verify / `bitnet-lab verify`: the three tiers (kernel, BitLinear, model) and the locator.

- the default model and tiny dummy files (i2_s, tq2_0, tl2) pass every tier, on every ISA level
  and 1 and 2 threads; the report renders as a table, JSON and HTML;
- fault injection (``kernels.inject_fault`` in process, ``BITNET_LAB_FAULT`` in a CLI subprocess)
  makes the kernel tier fail and names the kernel; a wrong ``quantize_act`` is caught too;
- a perturbed copy of one weight handed to the native engine only is located to its layer and op
  (a flipped ternary code → that projection's ``.acc``; a changed γ → its ``.out``);
- a benign perturbation that makes one int8 activation flip on a rounding near-tie is reported as
  tie-limited and does not fail; the locator's classification on hand-made captures (an exact
  k+0.5 tie, a wrong code, a wrong accumulator, float noise within tolerance);
- the CLI: ``--json`` parses, exit status 0 only when everything holds, bad flags/arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import cli, kernels
import bitnet_lab.verify.tiers as verify_mod
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.tools.dummy import generate_dummy
from bitnet_lab.errors import ConfigError, KernelError
from bitnet_lab.quant import packing, ternary
from bitnet_lab.tensors import FloatTensor, TernaryWeight

pytest.importorskip("jax")
from bitnet_lab.verify import DEFAULT_PROMPT, verify  # noqa: E402
from bitnet_lab.verify.locate import capture_order, locate  # noqa: E402
from bitnet_lab.verify.report import FAIL, TIE  # noqa: E402

N_STEPS = 3
THREADS = 2
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def model(model_path):
    m = bitnet_lab.load(model_path)
    yield m
    m.close()


@pytest.fixture
def no_fault():
    """Switch fault injection off afterwards, whatever the test did."""
    yield
    kernels.inject_fault(None)


# The I2_S ops the engine runs: on a level with a native x4 GEMV it re-orders I2_S at load
# (engine.I2S_LAYOUTS), and verify checks the x4 kernels it then uses.
GEMV_OP, GEMM_OP = ("i2s_x4_gemv", "i2s_x4_gemm") if kernels.i2s_x4_native() else ("i2s_gemv", "i2s_gemm")


def run(model, **kw):
    kw.setdefault("n", N_STEPS)
    kw.setdefault("threads", THREADS)
    return verify(model, progress=False, **kw)


def located_events(report):
    return [e for e in report.model_tier.events if e.located is not None]


# ---- everything holds ------------------------------------------------------------------------


def test_default_model_passes_every_tier(model):
    rep = run(model)
    assert rep.passed, rep.to_text()
    assert rep.kernel.passed and rep.bitlinear.passed and rep.model_tier.passed
    # every available ISA level, 1 and N threads, every MAD version of the I2_S kernels
    assert {c.isa for c in rep.kernel.checks} == set(kernels.available_isas())
    assert {c.threads for c in rep.kernel.checks if c.op == GEMV_OP} == {1, THREADS}
    versions = {v for v, isa, _ in kernels.kernel_versions()[GEMV_OP]}
    assert {c.version for c in rep.kernel.checks if c.op == GEMV_OP} == versions
    assert {c.op for c in rep.kernel.checks} == {"quantize_act", GEMV_OP, GEMM_OP}
    assert all(c.compared > 0 for c in rep.kernel.checks + rep.bitlinear.checks)
    # every projection of the sampled layers (all layers of a model with <= ALL_LAYERS_UP_TO)
    sampled = verify_mod._sample_layers(model.config.n_layers, None)
    assert len(rep.kernel.tensors) == 7 * len(sampled)
    # the model tier: n steps, captures compared at the prompt and at the decode steps
    m = rep.model_tier
    assert len(m.steps) == N_STEPS and set(m.capture_checks) == {"prefill", "decode step 1"}
    # Today's engine mirrors the reference bit for bit; one that rounds float sums differently may
    # flip an int8 activation on a near-tie, which verify must then report as tie-limited.
    assert all(e.status == TIE for e in m.events)
    if not m.events:
        assert m.tokens_identical == N_STEPS and m.max_rel_err <= 1e-4
        assert all(cc.located is None and cc.n_compared > 100 for cc in m.capture_checks.values())
    assert m.steps[0].pos == len(rep.settings["prompt_ids"])
    assert rep.settings["prompt"] == DEFAULT_PROMPT
    # the numerics mirrored are recorded
    for key in ("rounding", "act_floor", "kv_dtype", "lm_head"):
        assert key in rep.numerics
    assert rep.numerics["rounding"] == "half_even" and rep.numerics["kv_dtype"] == "f32"
    assert rep.environment["fault"] is None
    # renderings
    text = rep.to_text()
    for word in ("T1 kernel", "T2 BitLinear", "T3 model", "RESULT: PASS", GEMV_OP, "activation rounding"):
        assert word in text
    d = json.loads(rep.to_json())
    assert d["passed"] is True and len(d["tiers"]["model"]["steps"]) == N_STEPS
    assert d["tiers"]["kernel"]["checks"][0]["n_bad"] == 0
    assert "<table" in rep._repr_html_() and "PASS" in rep._repr_html_()
    assert bool(rep) is True


def test_public_spelling_is_callable():
    import bitnet_lab.verify as mod

    assert callable(bitnet_lab.verify) and callable(mod) and mod.verify is verify


@pytest.mark.parametrize("layout", ["tq2_0", "tl2"])
def test_dummy_layouts_pass(tmp_path_factory, layout):
    path = generate_dummy("tiny", tmp_path_factory.mktemp("verify") / f"tiny_{layout}.gguf", outtype=layout,
                          progress=False)
    rep = verify(path, n=2, threads=THREADS, progress=False)
    assert rep.passed, rep.to_text()
    ops = {c.op for c in rep.kernel.checks}
    # TQ2_0 runs on the x4 kernels where the level has a native x4 GEMV (the engine re-orders its
    # codes at load), else on its own kernels: verify checks the ones the engine runs
    tq2_ops = {GEMV_OP, GEMM_OP} if kernels.i2s_x4_native() else {"tq2_gemv", "tq2_gemm"}
    # TL2 runs on the x16 kernels where the level has the native x16 GEMV (decoded at load,
    # docs/kernels.md#tl-files-in-the-mad-layouts), else on the LUT kernels (and, on amx, the TL GEMM)
    if kernels.tq1_x16_native():
        tl2_ops = {"quantize_act", "tq1_x16_gemv", "tq1_x16_gemm"}
    else:
        tl2_ops = {"quantize_act", "tl2_build_lut", "tl2_gemv"} | ({"tl2_gemm"} if "amx" in kernels.available_isas() else set())
    assert ops == ({"quantize_act", *tq2_ops} if layout == "tq2_0" else tl2_ops)
    if layout == "tl2":  # held in the file's layout, the LUT kernels are the ones checked
        rep = verify(path, n=1, threads=THREADS, progress=False, i2s_layout="file")
        assert rep.passed and "tl2_gemv" in {c.op for c in rep.kernel.checks}, rep.to_text()


def test_options_are_mirrored_and_recorded(model):
    rep = run(model, n=1, rounding="half_away", kv_dtype="f16", lm_head_dtype="f32", isas=["scalar"],
              layers=[1], prompt=[1, 2, 3, 4])
    assert rep.passed, rep.to_text()
    assert rep.numerics["rounding"] == "half_away" and rep.numerics["kv_dtype"] == "f16"
    assert rep.numerics["lm_head"] == "f32"
    assert {c.isa for c in rep.kernel.checks} == {"scalar"} and rep.model_tier.isa == "scalar"
    assert rep.kernel.tensors == [f"blk.1.{p}.weight" for p in
                                  ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
    assert rep.settings["prompt_ids"] == [1, 2, 3, 4]


def test_bad_arguments_raise(model):
    with pytest.raises(KernelError, match="not available"):
        run(model, isas=["no_such_isa"])
    with pytest.raises(ConfigError, match="tolerance"):
        run(model, tolerance=0)
    with pytest.raises(ConfigError, match="layers"):
        run(model, layers=[99])
    with pytest.raises(ConfigError, match="rounding"):
        run(model, rounding="half_up")
    with pytest.raises(ConfigError, match="n must be"):
        run(model, n=-1)
    with pytest.raises(ConfigError, match="empty"):
        run(model, prompt=[])
    with pytest.raises(ConfigError, match="context"):
        run(model, n=model.config.context)


# ---- broken kernels --------------------------------------------------------------------------


def test_i2s_gemv_fault_fails_the_kernel_tier(model, no_fault):
    kernels.inject_fault(GEMV_OP)
    rep = run(model)
    kernels.inject_fault(None)
    assert not rep.passed and not rep.kernel.passed
    assert {c.op for c in rep.kernel.failures} == {GEMV_OP}  # GEMM, quantize_act untouched
    first = rep.kernel.failures[0].first
    assert (first.subject, first.what, first.row, first.col) == ("blk.0.attn_q.weight", "acc", 0, 0)
    assert first.got == first.want + 1  # the fault adds 1 to out[0]
    assert rep.environment["fault"] == GEMV_OP
    assert GEMV_OP in rep.summary() and "FAULT INJECTION ON" in rep.to_text()
    # the first forward that runs the GEMV is located to its first projection: the decode step, or
    # on AVX2 already a prompt of at most GEMV_BATCH_MAX tokens (its rows run as GEMVs there)
    from bitnet_lab.engine.weights import GEMV_BATCH_MAX

    n_prompt = len(model.tokenizer.encode(DEFAULT_PROMPT))
    first_gemv = "prefill" if kernels.active_isa() == "avx2" and n_prompt <= GEMV_BATCH_MAX else "decode step 1"
    ev = located_events(rep)
    assert ev and ev[0].where == first_gemv and ev[0].status == FAIL
    assert (ev[0].located.layer, ev[0].located.op) == (0, "attn_q.acc")


def test_quantize_act_fault_is_caught(model, no_fault):
    kernels.inject_fault("quantize_act")
    rep = run(model, n=1)
    kernels.inject_fault(None)
    assert not rep.passed
    bad = {c.op for c in rep.kernel.failures}
    assert bad == {"quantize_act"}
    assert rep.kernel.failures[0].first.what == "sum_q"
    ev = located_events(rep)[0]
    assert ev.where == "prefill" and (ev.located.layer, ev.located.op) == (0, "attn_in.sum")
    assert "quantize_act" in ev.reason


def test_cli_exits_nonzero_under_fault_env(model_path):
    top = kernels.available_isas()[-1]
    op = "i2s_x4_gemv" if kernels.i2s_x4_native(top) else "i2s_gemv"
    env = dict(os.environ, BITNET_LAB_FAULT=op, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "bitnet_lab", "verify", "-m", str(model_path), "-n", "2", "-t", "2",
         "--isa", top, "--no-progress"],
        check=False, env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "T1 kernel  FAIL" in proc.stdout and op in proc.stdout
    assert "FAIL" in proc.stderr and op in proc.stderr


# ---- the locator on the real model -------------------------------------------------------------


def _flip_one_code(w: TernaryWeight) -> TernaryWeight:
    """A copy of an I2_S weight with its first zero of row 0 made +1."""
    t = w.ternary().copy()
    col = int(np.flatnonzero(t[0] == 0)[0])
    t[0, col] = 1
    return TernaryWeight(w.name, "i2_s", w.shape, packing.pack_i2_s(t), scale=w.scale)


def _scale_gamma(w: TernaryWeight) -> TernaryWeight:
    return TernaryWeight(w.name, w.layout, w.shape, w.data, scale=np.float32(w.scale * np.float32(1 + 2**-8)))


@pytest.mark.parametrize("pick, proj, change, op, what", [
    (2, "ffn_up", _flip_one_code, "ffn_up.acc", "acc"),
    (1, "attn_v", _scale_gamma, "attn_v.out", "y"),
])
def test_perturbed_weight_is_located(model, pick, proj, change, op, what):
    # a layer the BitLinear tier checks: the pick-th of the sampled layers
    layer_index = verify_mod._sample_layers(model.config.n_layers, None)[pick]
    name = f"blk.{layer_index}.{proj}.weight"
    tensors = dict(model.tensors)
    tensors[name] = change(model.tensors[name])
    rep = run(model, n=2, native_tensors=tensors)
    assert not rep.passed
    assert rep.kernel.passed  # the kernels compute what the (changed) bytes say
    bad = rep.bitlinear.failures
    assert bad and all(c.op == "bitlinear" for c in bad)  # the judge itself still agrees
    assert (bad[0].first.subject, bad[0].first.what) == (name, what)
    ev = located_events(rep)[0]
    layer = int(name.split(".")[1])
    assert ev.where == "prefill" and ev.status == FAIL
    assert (ev.located.layer, ev.located.op) == (layer, op)
    assert f"layer {layer} op {op}" in ev.reason and f"layer {layer} op {op}" in rep.summary()


def _nudge_to_a_tie(model) -> tuple[dict, int]:
    """The model's tensors with one element of blk.0.attn_norm.weight nudged so that one prompt
    activation crosses a rounding boundary (benign float noise, far within the tolerance, that
    changes an int8 code); and the column of that activation."""
    ids = model.tokenizer.encode(DEFAULT_PROMPT)
    from bitnet_lab.reference import ReferenceModel

    _, caps = ReferenceModel(model.config, model.tensors, n_ctx_max=64).logits(ids, capture=True)
    x, s = caps["blk.0.attn_norm"], caps["blk.0.attn_in.scale"]
    v = (x * s[:, None]).astype(np.float64)
    dist = np.abs(v - np.floor(v) - 0.5)  # distance to the nearest k + 0.5
    dist[np.abs(v) < 20] = np.inf  # large |x·s_x|: a tiny relative nudge crosses the boundary
    r, k = np.unravel_index(np.argmin(dist), dist.shape)
    rel = (np.floor(v[r, k]) + 0.5 - v[r, k]) / v[r, k]
    # 1.5·rel must stay well inside the 1e-4 tolerance for the nudged norm output to count as noise
    assert 0 < abs(rel) < 5e-5, f"no activation close enough to a tie (needs {rel:.3g})"
    w = model.tensors["blk.0.attn_norm.weight"]
    a = w.to_numpy().copy()
    a[k] = np.float32(a[k] * (1 + 1.5 * rel))
    tensors = dict(model.tensors)
    tensors[w.name] = FloatTensor(w.name, "F32", w.shape, a)
    return tensors, int(k)


def test_flip_on_a_near_tie_is_tie_limited(model):
    tensors, k = _nudge_to_a_tie(model)
    rep = run(model, n=2, native_tensors=tensors)
    ev = located_events(rep)[0]
    assert ev.where == "prefill" and ev.status == TIE, ev.reason
    assert (ev.located.layer, ev.located.op) == (0, "attn_in.q")
    assert k in [c for _, c in ev.located.details["flipped"]] and "near-tie" in ev.reason
    assert all(e.status == TIE for e in rep.model_tier.events)
    assert rep.passed, rep.to_text()


def test_fault_downstream_of_a_tie_is_still_located(model):
    tensors, _ = _nudge_to_a_tie(model)
    name = "blk.2.ffn_up.weight"
    tensors[name] = _flip_one_code(model.tensors[name])
    rep = run(model, n=2, native_tensors=tensors)
    ev = located_events(rep)[0]
    assert ev.where == "prefill" and ev.status == FAIL, ev.reason
    assert (ev.located.layer, ev.located.op) == (2, "ffn_up.acc")
    assert ev.located.details["after_tie"]["op"] == "attn_in.q" and "past an earlier tie" in ev.reason
    assert not rep.passed


# ---- the locator on hand-made captures ----------------------------------------------------------


def _caps(x: np.ndarray, rounding="half_even") -> dict:
    q, s, sq = ternary.quantize_activations(x, rounding)
    t = np.array([[1, -1, 0, 1, 0, 1, -1, 1]], np.int8)
    acc = (q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)
    return {"embd": x.copy(), "blk.0.attn_norm": x.copy(), "blk.0.attn_in.scale": s, "blk.0.attn_in.q": q,
            "blk.0.attn_in.sum": sq, "blk.0.attn_q.acc": acc,
            "blk.0.attn_q.out": ternary.bitlinear_epilogue(acc, s, np.float32(0.5)),
            "logits": np.array([[1.0, 2.0]], np.float32)}


def _locate(ref, nat, tol=1e-4):
    return locate(ref, nat, sub_norms=True, rounding="half_even", tolerance=tol)


X = np.array([[127.0, 2.5, -3.25, 10.0, 0.0, -1.5, 7.75, 3.0]], np.float32)  # absmax 127: s_x = 1


def test_locator_exact_tie_is_tie_limited():
    nat_x = X.copy()
    nat_x[0, 1] = np.nextafter(np.float32(2.5), np.float32(3))  # one ulp: 2.5 -> q 2, 2.5000002 -> q 3
    cc = _locate(_caps(X), _caps(nat_x))
    loc = cc.located
    assert (loc.layer, loc.op, loc.status) == (0, "attn_in.q", TIE)
    assert loc.details["n_exact_ties"] == 1 and loc.details["first"]["col"] == 1
    assert "exact rounding tie" in loc.reason
    assert cc.first_bit_difference.name == "embd"  # float noise noticed, within tolerance


def test_locator_wrong_code_is_a_failure():
    ref, nat = _caps(X), _caps(X)
    nat["blk.0.attn_in.q"] = nat["blk.0.attn_in.q"].copy()
    nat["blk.0.attn_in.q"][0, 3] += 1  # same input, different code: the quantiser is wrong
    loc = _locate(ref, nat).located
    assert (loc.op, loc.status) == ("attn_in.q", FAIL) and "quantisation is wrong" in loc.reason


def test_locator_wrong_accumulator_and_float_op():
    ref, nat = _caps(X), _caps(X)
    nat["blk.0.attn_q.acc"] = nat["blk.0.attn_q.acc"] + 1
    loc = _locate(ref, nat).located
    assert (loc.op, loc.status) == ("attn_q.acc", FAIL) and "product kernel" in loc.reason
    nat = _caps(X)
    nat["blk.0.attn_q.out"] = nat["blk.0.attn_q.out"] * np.float32(1.001)
    loc = _locate(ref, nat).located
    assert (loc.op, loc.status) == ("attn_q.out", FAIL)
    cc = _locate(ref, nat, tol=1e-2)  # within a looser tolerance: no divergence, bits noticed
    assert cc.located is None and cc.first_bit_difference.name == "blk.0.attn_q.out"


def test_capture_order_is_graph_order():
    names = ["logits", "blk.1.attn_norm", "blk.0.ffn_resid", "blk.0.new_thing", "blk.0.attn_in.q",
             "blk.0.attn_norm", "embd", "output_norm", "blk.0.attn_q.acc", "blk.10.attn_norm", "blk.2.attn_norm"]
    assert capture_order(names) == [
        "embd", "blk.0.attn_norm", "blk.0.attn_in.q", "blk.0.attn_q.acc", "blk.0.ffn_resid", "blk.0.new_thing",
        "blk.1.attn_norm", "blk.2.attn_norm", "blk.10.attn_norm", "output_norm", "logits"]


# ---- the command line ----------------------------------------------------------------------------


def test_cli_json(model_path, capsys):
    rc = cli.main(["verify", "-m", str(model_path), "-n", "2", "-t", "2", "--json", "--no-progress",
                   "--isa", kernels.available_isas()[-1]])
    out = capsys.readouterr().out
    assert rc == 0, out
    d = json.loads(out)
    assert d["passed"] is True and d["settings"]["n"] == 2 and len(d["tiers"]["model"]["steps"]) == 2
    assert d["numerics"]["rounding"] == "half_even"


def test_cli_bad_flags(model_path, capsys):
    assert cli.main(["verify", "-m", str(model_path), "--isa", "bogus", "--no-progress"]) == 1
    assert "bitnet-lab: error:" in capsys.readouterr().err
    assert cli.main(["verify", "-n", "-3"]) == 2
    assert cli.main(["verify", "--tolerance", "0"]) == 2
