"""The quantisation-aware trainer (bitnet_lab.train, bitnet_lab.reference.fakequant) and the corpus
script: the tokenizer, the data windows, the STE BitLinear against the numerics policy, loss going
down, exact resume, export -> bitnet_lab.load -> reference logits = the trainer's forward."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import bitnet_lab  # noqa: E402
from bitnet_lab import train as T  # noqa: E402
from bitnet_lab.train.checkpoint import _flatten  # noqa: E402
from bitnet_lab.errors import ConfigError  # noqa: E402
from bitnet_lab.formats.gguf import GGUFFile  # noqa: E402
from bitnet_lab.quant import ternary  # noqa: E402
from bitnet_lab.reference import fakequant as FQ  # noqa: E402
from bitnet_lab.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CFG = T.PRESETS["tiny"].replace(steps=12, warmup=3, eval_every=6, ckpt_every=6, log_every=1)
TEXTS = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "Ünïcödé → text, emoji 🙂 and tabs\tand  double  spaces.\r\nCRLF line\n",
    "x = [1, 22, 333, 4444]  # numbers 12345678\n\n\n    indented\n",
]


def _gather_module():
    spec = importlib.util.spec_from_file_location("gather_corpus", ROOT / "scripts" / "gather_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    _gather_module().gather(out, max_bytes=150_000, valid_permille=30, quiet=True)
    return out


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """One complete tiny run (12 steps), shared by the tests below."""
    d = tmp_path_factory.mktemp("run")
    summary = T.train(CFG, corpus, d, progress=False)
    return d, summary


# ---- corpus ---------------------------------------------------------------------------------
def test_gather_corpus_is_deterministic_and_states_its_licence(corpus, tmp_path):
    m = json.loads((corpus / "manifest.json").read_text())
    assert m["licence"].startswith("PSF-2.0")
    assert (corpus / "LICENSE-PSF.txt").stat().st_size > 1000
    assert "Python Software Foundation License" in (corpus / "PROVENANCE.md").read_text()
    assert 0 < m["train"]["bytes"] <= 150_000 and m["valid"]["documents"] > 0
    again = _gather_module().gather(tmp_path, max_bytes=150_000, valid_permille=30, quiet=True)
    assert again["sha256"] == m["sha256"]  # byte-identical output
    sources = [json.loads(ln)["source"] for ln in (corpus / "valid.jsonl").read_text().splitlines()]
    g = _gather_module()
    assert all(g.is_valid(s, 30) for s in sources)
    assert not any(s.startswith("stdlib/test/") or "site-packages" in s for s in sources)


# ---- tokenizer -------------------------------------------------------------------------------
def test_tokenizer_trains_and_round_trips_through_gguf_metadata(tmp_path):
    docs = [(ROOT / "bitnet_lab" / n).read_text() for n in ("config.py", "tokenizer.py", "generate/loop.py")]
    hf = T.train_tokenizer(docs, vocab_size=400)
    assert hf.get_vocab_size() == 400 and hf.token_to_id(T.EOT) == 0
    T.save_tokenizer(hf, tmp_path / "tok")
    md = T.tokenizer_metadata(tmp_path / "tok")
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == T.PRE_TOKENIZER
    # through a vocabulary-only GGUF file, as a model file carries it
    from bitnet_lab.formats.gguf_writer import GGUFWriter

    w = GGUFWriter(tmp_path / "vocab.gguf")
    for k, v in md.items():
        w.add_metadata(k, v)
    w.write()
    tok = Tokenizer.from_gguf(tmp_path / "vocab.gguf")
    assert tok.vocab_size == 400 and tok.bos_id == tok.eos_id == tok.eot_id == 0 and tok.add_bos
    for text in TEXTS + docs[:1]:
        ids = tok.encode(text, add_bos=False)
        assert ids == hf.encode(text).ids  # the trainer's tokenizer = the inference tokenizer
        assert tok.decode(ids) == text
    assert tok.encode("a", add_bos=True)[0] == 0
    assert tok.is_eog(0)


def test_tokenizer_refuses_a_tiny_vocabulary():
    with pytest.raises(ConfigError, match="too small"):
        T.train_tokenizer(["abc"], vocab_size=100)


# ---- data ------------------------------------------------------------------------------------
def test_token_windows_are_a_function_of_seed_and_step(tmp_path):
    ids = np.arange(1000, dtype=np.uint16)
    ids.tofile(tmp_path / "t.bin")
    d = T.TokenData(tmp_path / "t.bin", context=16)
    x1, y1 = d.batch(5, 4, seed=1)
    x2, y2 = d.batch(5, 4, seed=1)
    assert x1.shape == (4, 16) and np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(y1[:, :-1], x1[:, 1:]) and np.array_equal(y1[:, -1], x1[:, -1] + 1)
    assert not np.array_equal(d.batch(6, 4, seed=1)[0], x1)
    ex, ey = d.eval_windows(3)
    assert ex[0, 0] == 0 and ey[-1, -1] == 999  # evenly spaced, first and last window included
    with pytest.raises(ConfigError, match="fewer than one window"):
        T.TokenData(tmp_path / "t.bin", context=999)


def test_train_config_refuses_shapes_i2_s_cannot_pack():
    with pytest.raises(ConfigError, match="multiple of 128"):
        T.TrainConfig(hidden=192, n_heads=3, n_kv_heads=1)
    with pytest.raises(ConfigError, match="n_kv_heads"):
        T.TrainConfig(n_heads=4, n_kv_heads=3)


# ---- the straight-through BitLinear ------------------------------------------------------------
def test_ternarize_matches_the_numpy_policy():
    rng = np.random.default_rng(0)
    for shape in [(64, 128), (256, 384)]:
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        t_np, g_np = ternary.absmean_ternarize(w)
        t_j, g_j = FQ.ternarize(jnp.asarray(w))
        assert abs(float(g_j) - float(g_np)) <= 2 * np.spacing(g_np)  # f32 vs float64 mean: ≤ 2 ulp
        assert np.mean(np.asarray(t_j) == t_np) > 0.999


def test_ste_bitlinear_forward_is_the_inference_math():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 128)).astype(np.float32)
    w = (rng.standard_normal((64, 128)) * 0.05).astype(np.float32)
    y = np.asarray(FQ.ste_bitlinear(jnp.asarray(x), jnp.asarray(w), jnp.float32(-0.0), "half_even"))
    t, g = FQ.ternarize(jnp.asarray(w))
    t, g = np.asarray(t).astype(np.int8), np.float32(g)
    q, s_x, _ = ternary.quantize_activations(x.reshape(-1, 128))
    acc = q.astype(np.int32) @ t.T.astype(np.int32)  # exact integer dot
    want = ternary.bitlinear_epilogue(acc, s_x, g).reshape(3, 5, 64)
    assert np.array_equal(y, want)  # bit for bit


def test_ste_gradients_are_the_straight_through_surrogate():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((7, 128)).astype(np.float32))
    w = jnp.asarray((rng.standard_normal((32, 128)) * 0.05).astype(np.float32))
    r = jnp.asarray(rng.standard_normal((7, 32)).astype(np.float32))

    q, s_x, _ = ternary.quantize_activations(np.asarray(x))
    xq = jnp.asarray(q.astype(np.float32) / s_x[:, None])  # the fake-quant activation (a constant)

    def surrogate(x, w):  # BitNet's reference code: x + (quant(x) - x).detach(), same for w
        t, g = FQ.ternarize(w)
        xs = x + jax.lax.stop_gradient(xq - x)
        ws = w + jax.lax.stop_gradient(t * g - w)
        return jnp.sum((xs @ ws.T) * r)

    gx, gw = jax.grad(lambda x, w: jnp.sum(FQ.ste_bitlinear(x, w, jnp.float32(-0.0), "half_even") * r),
                      argnums=(0, 1))(x, w)
    sx, sw = jax.grad(surrogate, argnums=(0, 1))(x, w)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(sx), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(sw), rtol=1e-5, atol=1e-6)


def test_fp_baseline_is_the_same_architecture_without_quantisation():
    mcfg = CFG.model_config(64, 0)
    p = jax.tree.map(jnp.asarray, FQ.init_params(mcfg, 0))
    ids = jnp.asarray(np.arange(16, dtype=np.int32)[None] % 64)
    a = np.asarray(FQ.forward(p, ids, mcfg, fp=True))
    b = np.asarray(FQ.forward(p, ids, mcfg, fp=False))
    assert a.shape == b.shape == (1, 16, 64) and not np.allclose(a, b)
    # full precision with weights that are already ternary x gamma reproduces the quantised
    # projections up to the activation rounding: a coarse but real link between the two modes
    tern = {k: (v if k not in FQ.PROJECTIONS else jnp.stack([t * g for t, g in map(FQ.ternarize, v)]))
            for k, v in p["layers"].items()}
    c = np.asarray(FQ.forward({**p, "layers": tern}, ids, mcfg, fp=True))
    assert np.abs(c - b).max() < 0.1 * np.abs(b).max()


# ---- training runs -----------------------------------------------------------------------------
def test_a_few_steps_decrease_the_loss(run):
    d, summary = run
    curve = [json.loads(ln) for ln in (d / T.LOG_NAME).read_text().splitlines()]
    losses = [e["loss"] for e in curve if "loss" in e]
    assert len(losses) == CFG.steps and summary["complete"] and summary["step"] == CFG.steps
    assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
    vals = [e["val_loss"] for e in curve if "val_loss" in e]
    assert len(vals) == 2 and vals[1] < vals[0]
    assert summary["tokens_seen"] == CFG.steps * CFG.tokens_per_step


def test_resume_gives_the_uninterrupted_state(run, corpus, tmp_path):
    d_full, _ = run
    s = T.train(CFG, corpus, tmp_path, progress=False, stop_after=5)
    assert not s["complete"] and T.load_checkpoint(tmp_path / T.CKPT_NAME)["step"] == 5
    s = T.train(CFG, corpus, tmp_path, progress=False)
    assert s["complete"]
    a, b = T.load_checkpoint(d_full / T.CKPT_NAME), T.load_checkpoint(tmp_path / T.CKPT_NAME)
    fa, fb = _flatten(a["params"]), _flatten(b["params"])
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert all(np.array_equal(x, y) for x, y in zip(a["opt_leaves"], b["opt_leaves"]))
    la = [json.loads(ln) for ln in (d_full / T.LOG_NAME).read_text().splitlines()]
    lb = [json.loads(ln) for ln in (tmp_path / T.LOG_NAME).read_text().splitlines()]
    key = lambda e: (e["step"], e.get("loss"), e.get("val_loss"))  # noqa: E731
    assert [key(e) for e in la] == [key(e) for e in lb]
    # a different run in the same folder is refused, not silently mixed
    with pytest.raises(ConfigError, match="different run"):
        T.train(CFG.replace(lr=1e-3), corpus, tmp_path, progress=False)


def test_export_loads_and_the_reference_agrees_with_the_trainer(run, tmp_path):
    d, _ = run
    ckpt_model = T.CheckpointModel(d)
    prompts = ["def main(argv):\n    ", "import os\nimport sys\n\n\nclass Path", "The"]
    # F32 embedding: the only differences left are f32 vs float64 sums in norms/softmax/lm_head
    path32 = T.export_run(d, tmp_path / "m32.gguf", embedding_type="f32")
    m = bitnet_lab.load(path32, backend="reference")
    assert np.float32(m.config.norm_eps) == np.float32(ckpt_model.config.norm_eps)  # stored as f32
    assert m.config == ckpt_model.config.replace(name=m.config.name, norm_eps=m.config.norm_eps)
    for p in prompts:
        ids = m.tokenizer.encode(p)
        a, b = m.logits(ids), ckpt_model.logits(ids)
        assert np.abs(a - b).max() < 1e-3 * max(1.0, np.abs(b).max())
        assert np.array_equal(a.argmax(-1), b.argmax(-1))
    # greedy generation on the exported file picks the tokens the trainer's forward would pick
    from bitnet_lab.generate import TokenEvent, make_sampler

    prompt = m.tokenizer.encode(prompts[0])
    gen = [ev.token_id for ev in m.generate(prompt, n=6, sampler=make_sampler(temp=0), ignore_eos=True)
           if isinstance(ev, TokenEvent)]
    assert len(gen) == 6
    full = ckpt_model.logits(prompt + gen)
    assert full[len(prompt) - 1:-1].argmax(-1).tolist() == gen
    # the shipped form: I2_S + F16 embedding (the reference then rounds the lm_head input to fp16)
    path = T.export_run(d, tmp_path / "m.gguf")
    with GGUFFile(path) as f:
        md = f.metadata
    assert md["general.architecture"] == "bitnet-b1.58" and md["general.file_type"] == 40
    assert md["bitnet_lab.hidden_act"] == "relu2" and md["tokenizer.ggml.pre"] == T.PRE_TOKENIZER
    m16 = bitnet_lab.load(path, backend="reference")
    assert all(w.layout == "i2_s" for w in m16.ternary_weights().values())
    assert len(m16.ternary_weights()) == 7 * CFG.n_layers
    for p in prompts:
        ids = m16.tokenizer.encode(p)
        a, b = m16.logits(ids), ckpt_model.logits(ids)
        assert np.abs(a - b).max() < 2e-2 * max(1.0, np.abs(b).max())


def test_tq_exports_hold_the_same_ternary_weights(run, tmp_path):
    d, _ = run
    md = T.tokenizer_metadata(d / T.TOKENIZER_DIR)
    cfg = CFG.replace(hidden=256, ffn=512, n_layers=1)  # TQ types need K % 256 == 0
    mcfg = cfg.model_config(len(md["tokenizer.ggml.tokens"]), 0)
    params = FQ.init_params(mcfg, 3)
    models = {o: bitnet_lab.load(T.export_gguf(params, mcfg, md, tmp_path / f"{o}.gguf", outtype=o))
              for o in ("i2_s", "tq2_0", "tq1_0")}
    ws = models["i2_s"].ternary_weights()
    for o in ("tq2_0", "tq1_0"):
        for name, w in models[o].ternary_weights().items():
            assert w.layout == o
            assert np.array_equal(w.ternary(), ws[name].ternary())
            assert np.float16(w.gamma()) == np.float16(ws[name].gamma())
    with pytest.raises(bitnet_lab.GGUFError, match="K % 256"):  # the tiny run's K = 128
        T.export_run(d, tmp_path / "x.gguf", outtype="tq2_0")


def test_export_refuses_a_full_precision_run(corpus, tmp_path):
    cfg = CFG.replace(fp=True, steps=1, eval_every=1, ckpt_every=1)
    T.train(cfg, corpus, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="full-precision"):
        T.export_run(tmp_path, tmp_path / "x.gguf")


def test_cli_train_resumes_and_exports(run, corpus, tmp_path, capsys):
    from bitnet_lab.cli import main

    d = tmp_path / "cli"
    args = ["train", "--preset", "tiny", "--corpus", str(corpus), "-o", str(d), "--steps", "12", "--warmup", "3",
            "--eval-every", "6", "--ckpt-every", "6", "--log-every", "1", "--no-progress"]
    assert main(args + ["--stop-after", "6"]) == 0
    assert "stopped at step 6 of 12" in capsys.readouterr().out
    assert main(args + ["--export", str(d / "m.gguf")]) == 0
    assert "complete" in capsys.readouterr().out
    ref = T.load_checkpoint(run[0] / T.CKPT_NAME)["params"]
    got = T.load_checkpoint(d / T.CKPT_NAME)["params"]
    assert np.array_equal(ref["embed"], got["embed"])  # the CLI ran the same run
    assert bitnet_lab.load(d / "m.gguf").config.n_layers == CFG.n_layers


def test_cli_perplexity_measures_a_training_run(run, corpus, capsys):
    from bitnet_lab.cli import main
    from bitnet_lab.generate.perplexity import model_perplexity

    d, _ = run
    text = (corpus / "valid.txt").read_text()
    assert main(["perplexity", "-m", str(d), "-f", str(corpus / "valid.txt"), "-c", "32", "--chunks", "2",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    direct = model_perplexity(T.CheckpointModel(d), text, 32, n_chunks=2)
    assert res["count"] == 2 * 15 and abs(res["ppl"] - direct.ppl) <= 1e-6 * direct.ppl


def test_a_run_folder_is_tied_to_its_data(run, corpus):
    d, _ = run
    info = T.prepare_data(corpus, d, CFG.vocab, progress=False)  # same data: reused, not retrained
    assert info["tokenizer"].vocab_size == CFG.vocab and info["n_train"] == len(T.TokenData(d / "train.bin", 8))
    with pytest.raises(ConfigError, match="prepared from other data"):
        T.prepare_data(corpus, d, 400, progress=False)


def test_restart_recovers_a_folder_poisoned_by_a_failed_first_try(corpus, tmp_path, capsys):
    """Issue 18 item 6: a first `train` without a corpus must not leave the run folder tied to
    "no data", and `--restart` starts over in a folder prepared from other data."""
    from bitnet_lab.cli import main

    d = tmp_path / "run"
    args = ["train", "--preset", "tiny", "-o", str(d), "--steps", "2", "--warmup", "1", "--eval-every", "2",
            "--ckpt-every", "2", "--log-every", "1", "--no-progress"]
    assert main(args + ["--corpus", str(tmp_path / "no-corpus-here")]) == 1
    assert "gather the corpus first" in capsys.readouterr().err
    assert not (d / "data.json").exists()                # nothing claims the folder
    assert main(args + ["--corpus", str(corpus)]) == 0   # so the next try just works
    capsys.readouterr()
    # a folder prepared from other data (e.g. by an older version's failed try): refused without
    # --restart, started over with it
    (d / "data.json").write_text(json.dumps({"vocab": CFG.vocab, "corpus": "elsewhere", "corpus_sha256": None,
                                             "valid_sha256": None}))
    assert main(args + ["--corpus", str(corpus)]) == 1
    assert "prepared from other data" in capsys.readouterr().err
    assert main(args + ["--corpus", str(corpus), "--restart"]) == 0
    assert "complete" in capsys.readouterr().out
    assert json.loads((d / "data.json").read_text())["corpus_sha256"] is not None
    # a tokenizer without its data.json: also started over with --restart
    (d / "data.json").unlink()
    assert main(args + ["--corpus", str(corpus), "--restart"]) == 0
