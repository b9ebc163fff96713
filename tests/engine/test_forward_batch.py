"""The batched forward pass (forward_batch): every sequence's logits equal its forward alone.

- native engine: N = 1..16 sequences with mixed prefill chunks and decode rows in one call,
  compared bit for bit with each sequence run alone (whole prompt, then one token at a time) —
  for every ternary file type (I2_S, TQ2_0, TQ1_0, TL1, TL2), f32 and f16 caches, 1 and 2
  threads, every ISA level present (the AVX-512 levels run wherever the machine has them), a
  batch longer than the engine's internal ENGINE_CHUNK rows, and last_only=False;
- the reference: forward_batch equals forward per sequence (its semantic model);
- bad batches: one error naming the sequence, and every cache left as it was.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.engine import ENGINE_CHUNK, NativeEngine
from bitnet_lab.errors import BitnetLabError
from bitnet_lab.tools.dummy import generate_dummy
from bitnet_lab.tools.testing import tiny_model

FILE_LAYOUTS = ("i2_s", "tq2_0", "tq1_0", "tl1", "tl2")


@pytest.fixture(scope="module")
def dummy_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_dummies")
    models = {lay: bitnet_lab.load(generate_dummy("tiny", d / f"tiny_{lay}.gguf", outtype=lay, progress=False))
              for lay in FILE_LAYOUTS}
    yield models
    for m in models.values():
        m.close()


def schedule(n_seq: int, vocab: int, seed: int):
    """Per sequence: its tokens, and the sizes of the pieces it is fed in over the batched steps
    (prompt chunks of different sizes, then single decode tokens; sequences start late so that
    prefill and decode rows share steps)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for i in range(n_seq):
        n_prompt = int(rng.integers(1, 12))
        chunks = []
        left = n_prompt
        while left:
            c = min(left, int(rng.integers(1, 6)))
            chunks.append(c)
            left -= c
        pieces = [0] * int(rng.integers(0, 3)) + chunks + [1] * int(rng.integers(1, 5))   # 0: not yet joined
        seqs.append((rng.integers(0, vocab, sum(pieces)).tolist(), pieces))
    return seqs


def alone(eng, toks, pieces, n_ctx):
    """Logits of each piece's last token, the sequence run by itself: prompt in one forward,
    then token by token (a different split from the batch's: prefill rows == decode rows)."""
    cache = eng.new_cache(n_ctx)
    rows = eng.forward(toks, cache)
    ends = np.cumsum([p for p in pieces if p]) - 1
    return rows[ends]


def batched(eng, seqs, n_ctx, last_only=True):
    """Feed every sequence its pieces, all active sequences in one forward_batch per step."""
    caches = [eng.new_cache(n_ctx) for _ in seqs]
    fed = [0] * len(seqs)
    got: list[list[np.ndarray]] = [[] for _ in seqs]
    for step in range(max(len(p) for _, p in seqs)):
        idx = [i for i, (_, p) in enumerate(seqs) if step < len(p) and p[step]]
        if not idx:
            continue
        ids = []
        for i in idx:
            toks, pieces = seqs[i]
            ids.append(toks[fed[i]: fed[i] + pieces[step]])
            fed[i] += pieces[step]
        out = eng.forward_batch(ids, [caches[i] for i in idx], last_only=last_only)
        for k, i in enumerate(idx):
            got[i].append(out[k] if last_only else out[k][-1])
    assert all(c.pos == f for c, f in zip(caches, fed))
    return [np.stack(g) for g in got]


def check_batch_equals_alone(eng, n_seq, seed, n_ctx=64):
    seqs = schedule(n_seq, eng.vocab_size, seed)
    got = batched(eng, seqs, n_ctx)
    for i, (toks, pieces) in enumerate(seqs):
        want = alone(eng, toks, pieces, n_ctx)
        assert got[i].shape == want.shape
        assert np.array_equal(got[i], want), f"sequence {i} of {n_seq}: batch logits differ from alone"


@pytest.mark.parametrize("layout", FILE_LAYOUTS)
def test_batch_equals_alone_every_file_type(dummy_models, layout):
    m = dummy_models[layout]
    eng = NativeEngine(m.config, m.tensors, threads=2)
    for n_seq in range(1, 17) if layout == "i2_s" else (1, 2, 5, 16):
        check_batch_equals_alone(eng, n_seq, seed=n_seq)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kv_dtype", ["f32", "f16"])
def test_batch_equals_alone_every_isa_and_thread_count(dummy_models, threads, kv_dtype):
    for layout in ("i2_s", "tl2"):
        m = dummy_models[layout]
        eng = NativeEngine(m.config, m.tensors, threads=threads, kv_dtype=kv_dtype)
        for isa in kernels.available_isas():
            with kernels.use_isa(isa):
                for n_seq in (1, 3, 8):
                    check_batch_equals_alone(eng, n_seq, seed=100 + n_seq)


def test_batch_longer_than_an_engine_chunk_and_all_rows(dummy_models):
    """More rows in one call than ENGINE_CHUNK (the chunk boundary falls inside a sequence), and
    last_only=False: every row of every sequence equals the sequence's own forward."""
    m = dummy_models["i2_s"]
    eng = NativeEngine(m.config, m.tensors, threads=2)
    rng = np.random.default_rng(7)
    lens = [70, 1, 45, 30, 1]
    assert sum(lens) > ENGINE_CHUNK
    pre = [int(x) for x in rng.integers(0, 5, len(lens))]        # tokens cached before the call
    seqs = [rng.integers(0, eng.vocab_size, p + n).tolist() for p, n in zip(pre, lens)]
    caches = [eng.new_cache(256) for _ in lens]
    for c, s, p in zip(caches, seqs, pre):
        if p:
            eng.forward(s[:p], c)
    out = eng.forward_batch([s[p:] for s, p in zip(seqs, pre)], caches, last_only=False)
    assert [o.shape for o in out] == [(n, eng.vocab_size) for n in lens]
    for o, s, p in zip(out, seqs, pre):
        assert np.array_equal(o, eng.forward(s, eng.new_cache(256))[p:])


def test_reference_forward_batch_is_forward_per_sequence():
    from bitnet_lab.reference import ReferenceModel

    config, tensors = tiny_model("bitnet-b1.58", seed=3)
    ref = ReferenceModel(config, tensors)
    seqs = [[1, 2, 3], [4], [5, 6]]
    caches = [ref.new_cache(16) for _ in seqs]
    last = ref.forward_batch(seqs, caches)
    assert last.shape == (3, ref.vocab_size) and [c.pos for c in caches] == [3, 1, 2]
    for row, s in zip(last, seqs):
        assert np.array_equal(row, ref.forward(s, ref.new_cache(16))[-1])
    rows = ref.forward_batch([[7, 8], [9]], caches[:2], last_only=False)
    assert [r.shape[0] for r in rows] == [2, 1]
    assert np.array_equal(rows[1], ref.forward([4, 9], ref.new_cache(16))[1:])


def test_bad_batches_name_the_sequence_and_change_no_cache(dummy_models):
    m = dummy_models["i2_s"]
    eng = NativeEngine(m.config, m.tensors, threads=1)
    a, b = eng.new_cache(8), eng.new_cache(4)
    eng.forward([1, 2], a)
    cases = [
        (([[1], [2]], [a]), "2 sequences but 1 caches"),
        (([], []), "no sequences"),
        (([[1], []], [a, b]), "sequence 1 has no tokens"),
        (([[1], [2]], [a, a]), "sequences 0 and 1 share one cache"),
        (([[1], [2, 3, 4, 5, 6]], [a, b]), "sequence 1: context overflow: 0 cached + 5 new tokens > n_ctx 4"),
        (([[1], [eng.vocab_size]], [a, b]), "sequence 1: token id"),
        (([[1], [2]], [a, NativeEngine(m.config, m.tensors, threads=1).new_cache(4)]), "cache 1 is not a NativeCache"),
        (("abc", [a]), "list of token-id sequences"),
    ]
    for (seqs, caches), msg in cases:
        with pytest.raises(BitnetLabError, match=re.escape(msg)):
            eng.forward_batch(seqs, caches)
        assert (a.pos, b.pos) == (2, 0)
