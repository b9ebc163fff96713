"""Speculative decoding on real backends: tiny dummy GGUFs of every ternary file type, the native
engine at every ISA level present (scalar and avx2 on an AVX2 machine; the AVX-512 levels run
where the CPU has them) and the JAX reference.

- greedy tokens equal plain decode's with drafters that are often right, always wrong, prompt
  lookup and self-speculation (the target's first layers);
- the logits of a batched verification pass, and of every step after a rollback, are plain
  decode's bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import bitnet_lab as bl
from bitnet_lab import kernels
from bitnet_lab.generate import DoneEvent, make_sampler
from bitnet_lab.generate.speculative import Draft, SelfSpeculative, Speculation, verify_step

from test_speculative import Oracle

GREEDY = make_sampler(temp=0)
FILE_TYPES = ("i2_s", "tq1_0", "tq2_0", "tl1", "tl2")
PROMPTS = ["Hello world, hello world, hello", "def f(x):\n    return x", "the the the the", "1 2 3 4 5 6"]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from bitnet_lab.tools.dummy import generate_dummy

    d = tmp_path_factory.mktemp("spec")
    return {t: generate_dummy("tiny", d / f"tiny_{t}.gguf", outtype=t, progress=False) for t in FILE_TYPES}


def _tokens(model, prompt, n=24, **kw):
    events = list(model.generate(prompt, n=n, sampler=GREEDY, n_ctx=128, stop_ids=(), **kw))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    return done


def _check_equal(model, prompts=PROMPTS, n=24):
    for prompt in prompts:
        plain = _tokens(model, prompt, n)
        ids = model.tokenizer.encode(prompt)
        drafters = {
            "oracle": Speculation(Oracle(ids, list(plain.token_ids), model.config.vocab, 0.3, seed=len(prompt)),
                                  draft_max=5, cost_aware=False),
            "wrong": Speculation(Oracle(ids, list(plain.token_ids), model.config.vocab, 1.0), draft_max=5,
                                 cost_aware=False),
            "lookup": "lookup:3",
            "self": "self:2",
        }
        for name, drafter in drafters.items():
            spec = _tokens(model, prompt, n, draft=drafter, draft_max=5)
            assert spec.token_ids == plain.token_ids, (prompt, name)
            assert spec.generated_text == plain.generated_text
            if name == "oracle":
                assert spec.n_accept > 0 and spec.n_pass < plain.n_pass
            if name == "wrong":
                assert spec.n_accept == 0 and spec.n_draft > 0


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_native_greedy_equals_plain_on_every_file_type_and_isa(tiny_files, file_type):
    model = bl.load(tiny_files[file_type], threads=1)
    best = kernels.active_isa()
    for isa in kernels.available_isas():
        with kernels.use_isa(isa):
            _check_equal(model, PROMPTS if isa == best else PROMPTS[:1], n=16)


def test_reference_greedy_equals_plain(tiny_files):
    model = bl.load(tiny_files["i2_s"], backend="reference")
    _check_equal(model, PROMPTS[:2], n=12)


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_verification_and_rollback_logits_are_plain_decodes_bits(tiny_files, file_type):
    """Plain: prompt, then one token a step, keeping each step's row. Speculative: the same prompt,
    then passes of [current + drafts] with wrong drafts, rolled back, and right drafts, accepted:
    every row of every pass that plain decode also computes is the same 32-bit pattern."""
    model = bl.load(tiny_files[file_type], threads=2)      # two threads: the GEMM path splits rows
    r = model.runner
    prompt = model.tokenizer.encode("Speculation must not change a bit")
    for isa in kernels.available_isas():
        with kernels.use_isa(isa):
            cache = r.new_cache(96)
            row = r.forward(prompt, cache, last_only=True)[-1]
            plain_rows, toks = [], []
            for _ in range(20):
                t = int(np.argmax(row))
                toks.append(t)
                row = r.forward([t], cache)[-1]
                plain_rows.append(row.copy())
            # speculative replay: drafts right for 3, then wrong, in passes of 5
            cache = r.new_cache(96)
            r.forward(prompt, cache, last_only=True)
            done, rng = 0, np.random.default_rng(0)
            context = list(prompt)
            while done < 16:
                drafts = [toks[done + 1 + j] if j < 3 else (toks[done + 1 + j] + 1) % model.config.vocab
                          for j in range(4)]
                step = verify_step(r, cache, context, toks[done], Draft(tuple(drafts)), GREEDY, rng)
                assert step.accepted == drafts[:3] and step.correction == toks[done + 4]
                for j in range(4):     # rows of the accepted positions and of the first rejected one
                    assert step.rows[j].view(np.uint32).tobytes() == plain_rows[done + j].view(np.uint32).tobytes()
                context += [toks[done]] + drafts[:3]
                done += 4
                assert cache.pos == len(prompt) + done
            # after the rollbacks, single steps continue exactly as plain decode
            for j in range(done, 20):
                row = r.forward([toks[j]], cache)[-1]
                assert row.view(np.uint32).tobytes() == plain_rows[j].view(np.uint32).tobytes()


def test_self_speculation_shares_the_targets_tensors(tiny_files):
    model = bl.load(tiny_files["i2_s"], threads=1)
    draft = SelfSpeculative(model, 2)
    assert draft.runner.config.n_layers == 2 and model.config.n_layers == 4
    # the draft's first two layers are the target's: its logits equal a 2-layer model's built by hand
    ids = model.tokenizer.encode("abc")
    import dataclasses

    from bitnet_lab.engine.native import NativeEngine

    short = dataclasses.replace(model.config, n_layers=2)
    kept = {k: v for k, v in model.tensors.items() if not k.startswith("blk.") or int(k.split(".")[1]) < 2}
    ref = NativeEngine(short, kept, threads=1).logits(ids)
    assert np.array_equal(draft.runner.logits(ids), ref)
    assert not np.array_equal(model.runner.logits(ids), ref)
