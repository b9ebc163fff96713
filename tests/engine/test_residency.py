"""Weights in anonymous huge pages (bitnet_lab.engine.residency; load(mmap=False), --no-mmap, -mmp)."""

from __future__ import annotations

import mmap
import os

import subprocess
import sys

import numpy as np
import pytest

import bitnet_lab
from bitnet_lab import kernels
from bitnet_lab.engine import residency
from bitnet_lab.engine import x4_repacked_names
from bitnet_lab.errors import BitnetLabError
from bitnet_lab.tensors import TernaryWeight


def _is_file_view(a) -> bool:
    return residency._file_view(a) is not None


def test_no_mmap_copies_every_tensor_out_of_the_file_and_changes_nothing_else(tiny_gguf):
    mapped, resident = bitnet_lab.load(tiny_gguf), bitnet_lab.load(tiny_gguf, mmap=False)
    assert mapped.tensors.keys() == resident.tensors.keys()
    # the I2_S projections the native engine re-orders into x4 memory of its own are left out of
    # the copy (it reads them with preadv): they are never held twice
    own = x4_repacked_names(mapped.config, mapped.tensors)
    assert bool(own) == kernels.i2s_x4_native()
    for name in own:
        kind, data = resident.runner.packed_weight(name)
        assert kind == "i2_s_x4" and not _is_file_view(data), name
    for name, t in mapped.tensors.items():
        r = resident.tensors[name]
        assert _is_file_view(t.data), name            # the default uses the file's map in place
        assert _is_file_view(r.data) == (name in own), name  # the copy does not
        assert type(r) is type(t) and r.shape == t.shape and r.data.dtype == t.data.dtype
        np.testing.assert_array_equal(np.asarray(r.data), np.asarray(t.data), err_msg=name)
        assert name in own or r.data.__array_interface__["data"][0] % residency.ALIGN == 0, name
        if isinstance(t, TernaryWeight):
            assert r.scale == t.scale
    ids = [1, 7, 300, 4]
    np.testing.assert_array_equal(resident.runner.logits(ids), mapped.runner.logits(ids))


def test_the_arena_starts_on_a_huge_page_and_outlives_its_views():
    a = residency._arena(3 << 20)
    assert a.__array_interface__["data"][0] % residency.HUGE_PAGE == 0 and a.nbytes == 3 << 20
    v = a[5:9]
    del a
    v[...] = 7  # the mapping stays alive through the view
    assert list(v) == [7, 7, 7, 7]


def test_in_memory_tensors_are_copied_as_they_are():
    from bitnet_lab.tensors import FloatTensor

    t = FloatTensor("x", (2, 3), "F32", np.arange(6, dtype=np.float32).reshape(2, 3))
    out = residency.to_anonymous_memory({"x": t})["x"]
    np.testing.assert_array_equal(out.data, t.data)
    assert not np.shares_memory(out.data, t.data)


def test_a_file_that_shrank_under_the_map_is_a_clear_error(tiny_gguf, tmp_path):
    copy = tmp_path / "shrinks.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    m = bitnet_lab.load(copy)
    os.truncate(copy, 4096)  # reading through the map now would fault; pread just comes up short
    with pytest.raises(BitnetLabError, match="ends early"):
        residency.to_anonymous_memory(m.tensors)


def test_bench_mmp_measures_both_and_labels_the_rows(tiny_gguf):
    from bitnet_lab import bench

    t = bench.bench(tiny_gguf, pp=(4,), tg=(2,), threads=(1,), repeat=1, mmap=(True, False))
    assert [(r.test, r.use_mmap) for r in t.rows] == [("pp4", True), ("tg2", True), ("pp4", False), ("tg2", False)]
    md = t.to_markdown()
    assert "| mmap |" in md.replace("  ", " ") or " mmap " in md.splitlines()[0]
    assert all(rec["use_mmap"] in (True, False) for rec in t.records())


def test_bench_labels_a_model_loaded_without_mmap_as_such(tiny_gguf):
    from bitnet_lab import bench
    from bitnet_lab.errors import ConfigError

    resident = bitnet_lab.load(tiny_gguf, mmap=False)
    assert not resident.mmap and bitnet_lab.load(tiny_gguf).mmap
    t = bench.bench(resident, pp=(), tg=(2,), threads=(1,), repeat=1, mmap=(False,))
    assert [r.use_mmap for r in t.rows] == [False]
    with pytest.raises(ConfigError, match="mmap=True needs"):
        bench.bench(resident, pp=(), tg=(2,), threads=(1,), repeat=1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssFile from /proc")
def test_drop_pages_takes_a_mapped_views_pages_out_of_rss_and_keeps_its_data(tmp_path):
    def rss_file_kib() -> int:
        line = next(x for x in open("/proc/self/status") if x.startswith("RssFile:"))
        return int(line.split()[1])

    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8)
    data.tofile(path)
    view = np.memmap(path, dtype=np.uint8, mode="r", offset=4096 * 3 + 100)[1000 : 12 << 20]
    checksum = int(view.sum(dtype=np.int64))  # every page of the view faulted in
    before = rss_file_kib()
    residency.drop_pages(view)
    assert before - rss_file_kib() >= 10 << 10  # ~12 MiB of the view's pages left RSS
    assert int(view.sum(dtype=np.int64)) == checksum  # and read back from the page cache, unchanged
    residency.drop_pages(np.zeros(10, np.uint8))  # not a file view: nothing to do


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_to_huge_pages_copies_a_mapped_array_in_slices(tmp_path, threads):
    # 5 MiB + a bit: with 2 or 3 threads the 2 MiB-page slices end in a short one
    data = np.random.default_rng(threads).integers(0, 2**16, (5 << 20) // 2 + 37, dtype=np.uint16)
    path = tmp_path / "rows.bin"
    path.write_bytes(b"\0" * 100 + data.tobytes())
    mapped = np.memmap(path, dtype=np.uint16, mode="r", offset=100, shape=data.shape)
    out = residency.to_huge_pages(mapped, threads)
    assert not _is_file_view(out) and out.dtype == data.dtype and out.shape == data.shape
    assert out.__array_interface__["data"][0] % residency.HUGE_PAGE == 0
    np.testing.assert_array_equal(out, data)
    plain = np.arange(10)
    assert residency.to_huge_pages(plain, threads) is plain  # not a file view: used as it is


def test_the_native_engine_streams_its_lm_head_from_its_own_memory(tiny_gguf):
    m = bitnet_lab.load(tiny_gguf)
    emb = m.tensors["token_embd.weight"]
    assert _is_file_view(emb.data)
    rows = m.runner.lm_head_rows
    assert not _is_file_view(rows)
    np.testing.assert_array_equal(rows.reshape(-1).view(np.uint8), np.asarray(emb.data).reshape(-1).view(np.uint8))


def _rss_anon_kib() -> int:
    # smaps_rollup walks the page tables: exact, where /proc/self/status's RssAnon is a per-CPU
    # counter sum that can lag by many pages after other work in the process
    line = next(x for x in open("/proc/self/smaps_rollup") if x.startswith("Anonymous:"))
    return int(line.split()[1])


def _thp_mode() -> str:
    try:
        s = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "never"
    return s[s.index("[") + 1 : s.index("]")]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc")
def test_lazy_zeros_commits_only_the_pages_written():
    # 64 blocks of 1 MiB, one element written per block: the KV cache's pattern at its first token
    # (one position in each of n_layers·n_kv_heads blocks)
    a = residency.lazy_zeros((64, 1 << 18), np.float32)
    assert a.shape == (64, 1 << 18) and a.dtype == np.float32 and a.flags.writeable and a.flags.c_contiguous
    before = _rss_anon_kib()
    a[:, 5] = 1.0
    grown = _rss_anon_kib() - before
    assert grown < 4 << 10, f"{grown} KiB committed for 64 written elements"  # 64 pages, not 64 MiB
    assert float(a.sum()) == 64.0 and a[:, :5].max() == 0.0
    if _thp_mode() in ("always", "madvise"):
        # the control: np.zeros (NumPy advises huge pages from 4 MiB up) commits ~all of it. In a
        # fresh process: here malloc may hand np.zeros heap memory earlier tests already committed.
        code = ("import numpy as np\n"
                "def anon():\n"
                "    return int(next(x for x in open('/proc/self/smaps_rollup') if x.startswith('Anonymous:')).split()[1])\n"
                "b = np.zeros((64, 1 << 18), np.float32); before = anon(); b[:, 5] = 1.0; print(anon() - before)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) > 32 << 10, f"np.zeros control grew {r.stdout.strip()} KiB"
    assert residency.lazy_zeros((0, 4), np.uint16).shape == (0, 4)


def test_the_native_kv_cache_grows_with_the_positions_written(tiny_gguf):
    runner = bitnet_lab.load(tiny_gguf).runner
    cache = runner.new_cache(64)
    for arr in (cache.k, cache.v):
        root = arr
        while isinstance(root, np.ndarray):
            root = root.base
        assert isinstance(getattr(root, "obj", root), mmap.mmap)  # residency.lazy_zeros's, not np.zeros
        assert not arr.any()
    runner.forward([1, 2, 3], cache)
    assert cache.k[:, :, :3].any() and not cache.k[:, :, 3:].any()
