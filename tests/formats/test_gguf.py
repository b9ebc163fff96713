"""GGUF reader/writer: round trips of every type, agreement with gguf-py's GGUFReader, and the
real files written by bitnet.cpp's and llama.cpp's own tools (tests/data/real-files/README.md)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from bitnet_lab.errors import GGUFError, UnsupportedTypeError
from bitnet_lab.formats import ggml_types as gt
from bitnet_lab.formats.gguf import (
    TL_TILING_KEY,
    GGUFFile,
    open_gguf,
    read_metadata,
)
from bitnet_lab.formats.gguf_writer import GGUFWriter, write_gguf
from bitnet_lab.quant import blockquant, packing
from bitnet_lab.tensors import FloatTensor, TernaryWeight
from bitnet_lab.quant.tiling import TLTiling

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "real-files"
VOCAB = ROOT / "data" / "vocab"

TL1_TILING = TLTiling(BM=64, BK=64, bm=32)   # legal for (64, 128)
TL2_TILING = TLTiling(BM=32, BK=96, bm=32)   # legal for (32, 256): 2 triple tiles + 64-col tail


def rng(seed=0):
    return np.random.default_rng(seed)


def ternary(M, K, seed=0):
    return rng(seed).integers(-1, 2, size=(M, K)).astype(np.int8)


def gguf_reader_metadata(path) -> dict:
    """Metadata through gguf-py (an independent parser), as plain Python values."""
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def ternary_weights() -> dict[str, TernaryWeight]:
    """One small TernaryWeight of every GGUF ternary layout."""
    t = ternary(8, 256, 1)
    d = (rng(2).random((8, 1)) + 0.5).astype(np.float16)
    out = {
        "i2_s": TernaryWeight("w.i2_s", "i2_s", (8, 256), packing.pack_i2_s(t), scale=np.float32(0.75)),
        "tq2_0": TernaryWeight("w.tq2_0", "tq2_0", (8, 256), packing.pack_tq2_0(t, d), block_scales=d),
        "tq1_0": TernaryWeight("w.tq1_0", "tq1_0", (8, 256), packing.pack_tq1_0(t, d), block_scales=d),
    }
    t1 = ternary(64, 128, 3)
    out["tl1"] = TernaryWeight("w.tl1", "tl1", (64, 128), packing.pack_tl1(t1, TL1_TILING),
                               scale=np.float32(0.125), tiling=TL1_TILING)
    t2 = ternary(32, 256, 4)
    out["tl2"] = TernaryWeight("w.tl2", "tl2", (32, 256), packing.pack_tl2(t2, TL2_TILING),
                               scale=np.float32(1.5), tiling=TL2_TILING)
    return out


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["i2_s", "tq2_0", "tq1_0", "tl1", "tl2"])
def test_ternary_round_trip(tmp_path, layout):
    w = ternary_weights()[layout]
    arch = {"i2_s": "bitnet-b1.58", "tl2": "bitnet"}.get(layout, "llama")
    meta = {"general.architecture": arch, "general.name": "rt"}
    path = write_gguf(tmp_path / f"{layout}.gguf", meta, {w.name: w})
    with GGUFFile(path) as f:
        ti = f.tensor_info(w.name)
        assert ti.layout == layout and ti.shape == w.shape
        assert ti.dims == (w.shape[1], w.shape[0])
        assert ti.offset % 32 == 0
        r = f.tensors()[w.name]
    assert isinstance(r, TernaryWeight) and r.layout == layout
    np.testing.assert_array_equal(r.ternary(), w.ternary())
    np.testing.assert_array_equal(r.dequantize(), w.dequantize())
    if layout.startswith("tq"):
        assert r.block_scales.dtype == np.float16 and r.block_scales.shape == (8, 1)
        np.testing.assert_array_equal(r.block_scales, w.block_scales)
    else:
        assert r.scale == w.scale and r.scale.dtype == np.float32
    if layout.startswith("tl"):
        assert r.tiling == w.tiling


def test_i2_s_blob_layout(tmp_path):
    """bitnet.cpp layout (docs/formats.md#14-rules-for-a-writer-that-bitnetcpp-binaries-must-load): v3,
    alignment 32, type 36, blob M·K/4 + 32 with the f32 scale in the first 4 bytes of the tail."""
    w = ternary_weights()["i2_s"]
    path = write_gguf(tmp_path / "i2s.gguf", {"general.architecture": "bitnet-b1.58", "general.file_type": 40},
                      {w.name: w})
    raw = path.read_bytes()
    assert raw[:4] == b"GGUF" and struct.unpack_from("<I", raw, 4)[0] == 3
    with GGUFFile(path) as f:
        ti = f.tensor_info(w.name)
        assert (f.version, f.alignment, ti.type_id, ti.nbytes) == (3, 32, 36, 8 * 256 // 4 + 32)
        assert f.metadata["general.file_type"] == 40
        assert f.metadata_types["general.file_type"] == VT.UINT32
    tail = raw[ti.offset + 8 * 256 // 4: ti.offset + ti.nbytes]
    assert struct.unpack("<f", tail[:4])[0] == 0.75
    assert raw[ti.offset: ti.offset + 512] == packing.pack_i2_s(w.ternary()).tobytes()


def test_tl_hidden_scale_slot(tmp_path):
    """TL1/TL2: data, zeros to pad32, then the 32-byte slot with the f32 scale
    (docs/formats.md#42-tl1-and-tl2-hidden-scale-slot)."""
    ws = ternary_weights()
    path = write_gguf(tmp_path / "tl.gguf", {"general.architecture": "bitnet"},
                      {ws["tl1"].name: ws["tl1"], ws["tl2"].name: ws["tl2"]})
    raw = path.read_bytes()
    with GGUFFile(path) as f:
        for name, M, K in (("w.tl1", 64, 128), ("w.tl2", 32, 256)):
            ti = f.tensor_info(name)
            layout = ti.layout
            assert ti.nbytes == packing.ternary_blob_nbytes(layout, M, K)
            slot = ti.offset + packing.tl_scale_offset(layout, M, K)
            assert ti.span == packing.tl_scale_offset(layout, M, K) + 32
            assert struct.unpack_from("<f", raw, slot)[0] == float(ws[layout].scale)
            assert raw[slot + 4: slot + 32] == bytes(28)
            # the fork's ggml_nbytes (which counts the slot) fits before the next tensor
            fork = packing.tl1_ggml_nbytes(M, K) if layout == "tl1" else packing.tl2_ggml_nbytes(M, K)
            assert ti.span == fork
        a, b = f.tensor_info("w.tl1"), f.tensor_info("w.tl2")
        assert b.offset >= a.offset + a.span


def test_float_round_trip(tmp_path):
    r = rng(5)
    x32 = r.standard_normal((3, 64)).astype(np.float32)
    x16 = r.standard_normal((4, 32)).astype(np.float16)
    xbf = r.standard_normal((2, 2, 64)).astype(np.float32)
    xq8 = r.standard_normal((2, 64)).astype(np.float32)
    w = GGUFWriter(tmp_path / "f.gguf")
    w.add_metadata("general.architecture", "llama")
    w.add_tensor_array("a.f32", "F32", x32)
    w.add_tensor_array("b.f16", "F16", x16)
    w.add_tensor_array("c.bf16", "BF16", xbf)
    w.add_tensor_array("d.q8_0", "Q8_0", xq8)
    w.add_tensor_array("e.norm", "F32", x32[0])
    path = w.write()
    with GGUFFile(path) as f:
        t = f.tensors()
    assert t["a.f32"].data.dtype == np.float32 and t["a.f32"].shape == (3, 64)
    np.testing.assert_array_equal(t["a.f32"].data, x32)
    np.testing.assert_array_equal(t["b.f16"].data, x16)
    np.testing.assert_array_equal(t["e.norm"].to_numpy(), x32[0])
    bf = t["c.bf16"].to_numpy()
    assert bf.shape == (2, 2, 64)
    np.testing.assert_allclose(bf, xbf, rtol=2**-8)
    # Q8_0 against gguf-py's own quantiser and dequantiser
    q8_ref = gguf.quants.quantize(xq8, QT.Q8_0)
    assert t["d.q8_0"].data.tobytes() == q8_ref.tobytes()
    np.testing.assert_array_equal(t["d.q8_0"].to_numpy(), gguf.quants.dequantize(q8_ref, QT.Q8_0))


def test_q6_k_blocks_read(tmp_path):
    """Q6_K (dequantise only): raw blocks written through add_tensor read back and decode as
    gguf-py decodes them."""
    r = rng(6)
    blocks = r.integers(0, 256, size=(2 * 2, 210), dtype=np.uint8)
    blocks[:, 208:210] = np.array([0.01], dtype="<f2").view(np.uint8)  # finite d
    w = GGUFWriter(tmp_path / "q6.gguf")
    w.add_tensor("emb", "Q6_K", (2, 512), lambda: blocks)
    with GGUFFile(w.write()) as f:
        e = f.tensors()["emb"]
    assert e.ggml_type == "Q6_K" and e.data.tobytes() == blocks.tobytes()
    ref = gguf.quants.dequantize(blocks.reshape(2, 420), QT.Q6_K)
    np.testing.assert_array_equal(e.to_numpy(), ref)


def test_zero_copy_views(tmp_path):
    ws = ternary_weights()
    x = rng(7).standard_normal((4, 32)).astype(np.float32)
    tensors = dict((w.name, w) for w in ws.values())
    tensors["f"] = FloatTensor("f", "F32", x.shape, x)
    path = write_gguf(tmp_path / "z.gguf", {"general.architecture": "bitnet"}, tensors)
    f = GGUFFile(path)
    mm = f._mm
    t = f.tensors()
    for name, obj in t.items():
        assert np.shares_memory(obj.data, mm), name
        assert not obj.data.flags.writeable, name
    i2 = t["w.i2_s"]
    assert i2.data.shape == (8, 256 // 4) and i2.data.dtype == np.uint8
    tq = t["w.tq2_0"]
    assert tq.data.shape == (8, 1, 66)
    f.close()
    # views handed out stay valid after close()
    np.testing.assert_array_equal(t["f"].data, x)


def test_metadata_types_inferred_and_explicit(tmp_path):
    w = GGUFWriter(tmp_path / "m.gguf")
    w.add_metadata("s", "héllo ✓")
    w.add_metadata("b", True)
    w.add_metadata("u32", 7)
    w.add_metadata("u64", 2**40)
    w.add_metadata("i32", -5)
    w.add_metadata("i64", -(2**40))
    w.add_metadata("f", 0.1)
    w.add_metadata("strs", ["a", "", "ĠĠ"])
    w.add_metadata("ints", [1, 2, 3])
    w.add_metadata("neg", [-1, 2])
    w.add_metadata("floats", [0.5, 1])
    w.add_metadata("bools", [True, False])
    w.add_metadata("np", np.arange(4, dtype=np.int16))
    w.add_metadata("nested", [[1, 2], [3]])
    w.add_metadata("tt", [1, 3, 6], VT.INT32)            # element type for a list
    w.add_metadata("u8", 200, VT.UINT8)
    w.add_metadata("d", 0.1, VT.FLOAT64)
    w.add_metadata("arr", [1.0, 2.0], (VT.ARRAY, VT.FLOAT64))
    w.add_metadata("empty", [])
    path = w.write()
    f = GGUFFile(path)
    m, ty = f.metadata, f.metadata_types
    assert m["s"] == "héllo ✓" and ty["s"] == VT.STRING
    assert m["b"] is True and ty["b"] == VT.BOOL
    assert (ty["u32"], ty["u64"], ty["i32"], ty["i64"]) == (VT.UINT32, VT.UINT64, VT.INT32, VT.INT64)
    assert (m["u64"], m["i64"]) == (2**40, -(2**40))
    assert ty["f"] == VT.FLOAT32 and m["f"] == float(np.float32(0.1))
    assert m["strs"] == ["a", "", "ĠĠ"] and ty["strs"] == (VT.ARRAY, VT.STRING)
    assert ty["ints"] == (VT.ARRAY, VT.UINT32) and ty["neg"] == (VT.ARRAY, VT.INT32)
    assert m["floats"] == [0.5, 1.0] and ty["floats"] == (VT.ARRAY, VT.FLOAT32)
    assert m["bools"] == [True, False]
    assert m["np"] == [0, 1, 2, 3] and ty["np"] == (VT.ARRAY, VT.INT16)
    assert m["nested"] == [[1, 2], [3]]
    assert ty["tt"] == (VT.ARRAY, VT.INT32) and ty["u8"] == VT.UINT8 and m["u8"] == 200
    assert m["d"] == 0.1 and ty["d"] == VT.FLOAT64 and ty["arr"] == (VT.ARRAY, VT.FLOAT64)
    assert m["empty"] == []
    # gguf-py agrees on every value
    ref = gguf_reader_metadata(path)
    for k in m:
        if k != "nested":  # gguf-py 0.19.0 does not decode nested arrays in contents()
            assert ref[k] == m[k], k


def test_metadata_value_errors_name_the_key(tmp_path):
    w = GGUFWriter(tmp_path / "e.gguf")
    with pytest.raises(GGUFError, match="'k1'.*300.*UINT8"):
        w.add_metadata("k1", 300, VT.UINT8)
    with pytest.raises(GGUFError, match="'k2'.*does not fit"):
        w.add_metadata("k2", 2**70)
    with pytest.raises(GGUFError, match="'k3'.*mixed"):
        w.add_metadata("k3", [1, "a"])
    with pytest.raises(GGUFError, match="'k4'.*object"):
        w.add_metadata("k4", object())
    w.add_metadata("k5", 1)
    with pytest.raises(GGUFError, match="'k5' added twice"):
        w.add_metadata("k5", 2)


def test_upstream_types_open_in_gguf_reader(tmp_path):
    """A file of F32/F16/BF16/Q8_0/TQ1_0/TQ2_0 reads identically through gguf-py."""
    ws = ternary_weights()
    r = rng(8)
    x = r.standard_normal((4, 64)).astype(np.float32)
    w = GGUFWriter(tmp_path / "up.gguf")
    w.add_metadata("general.architecture", "bitnet")
    w.add_metadata("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    w.add_metadata("tokenizer.ggml.scores", [0.0, -1.5, -2.0])
    w.add_metadata("tokenizer.ggml.token_type", [3, 1, 1], VT.INT32)
    for tn in ("F32", "F16", "BF16", "Q8_0"):
        w.add_tensor_array(f"x.{tn}", tn, x)
    for layout in ("tq1_0", "tq2_0"):
        tw = ws[layout]
        w.add_tensor(tw.name, layout.upper(), tw.shape, lambda tw=tw: tw.data)
    path = w.write()
    ours = GGUFFile(path)
    assert gguf_reader_metadata(path) == ours.metadata
    ref = gguf.GGUFReader(path)
    assert [t.name for t in ref.tensors] == ours.tensor_names
    t = ours.tensors()
    for rt in ref.tensors:
        ti = ours.tensor_info(rt.name)
        assert rt.tensor_type.name == ti.type_name
        assert list(rt.shape) == list(ti.dims)
        assert int(rt.data_offset) == ti.offset and int(rt.n_bytes) == ti.nbytes
        assert np.asarray(rt.data).tobytes() == np.asarray(t[rt.name].data).tobytes()
        if ti.layout is None:
            ref_vals = gguf.quants.dequantize(np.asarray(rt.data), rt.tensor_type).reshape(ti.shape)
            np.testing.assert_array_equal(t[rt.name].to_numpy(), ref_vals)
        else:
            ref_vals = gguf.quants.dequantize(np.asarray(rt.data), rt.tensor_type).reshape(ti.shape)
            np.testing.assert_array_equal(t[rt.name].dequantize(), ref_vals)


def test_alignment_64(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf", alignment=64)
    w.add_tensor_array("a", "F32", np.ones(3, np.float32))
    w.add_tensor_array("b", "F32", np.ones(5, np.float32))
    path = w.write()
    f = GGUFFile(path)
    assert f.alignment == 64 and f.metadata["general.alignment"] == 64
    assert all(ti.offset % 64 == 0 for ti in f.tensor_infos)
    assert gguf.GGUFReader(path).alignment == 64
    with pytest.raises(GGUFError, match="power of two"):
        GGUFWriter(tmp_path / "b.gguf", alignment=48)


def test_version_2_reads_like_3(tmp_path):
    w = GGUFWriter(tmp_path / "v.gguf")
    w.add_metadata("general.name", "v2")
    w.add_tensor_array("a", "F32", np.arange(8, dtype=np.float32))
    raw = bytearray(w.write().read_bytes())
    raw[4:8] = struct.pack("<I", 2)
    (tmp_path / "v2.gguf").write_bytes(raw)
    f = GGUFFile(tmp_path / "v2.gguf")
    assert f.version == 2 and f.metadata["general.name"] == "v2"
    np.testing.assert_array_equal(f.tensors()["a"].data, np.arange(8, dtype=np.float32))


def test_writer_streams_producers_in_order(tmp_path):
    """Producers run only in write(), once each, in declaration order."""
    calls = []

    def producer(i):
        def make():
            calls.append(i)
            return np.full(64, i, np.float32)
        return make

    w = GGUFWriter(tmp_path / "s.gguf")
    for i in range(3):
        w.add_tensor(f"t{i}", "F32", (64,), producer(i))
    assert calls == []
    w.write()
    assert calls == [0, 1, 2]
    f = GGUFFile(tmp_path / "s.gguf")
    assert [float(f.tensors()[f"t{i}"].data[0]) for i in range(3)] == [0.0, 1.0, 2.0]
    with pytest.raises(GGUFError, match="already called"):
        w.write()


def test_writer_checks_producer_size_and_leaves_no_file(tmp_path):
    w = GGUFWriter(tmp_path / "bad.gguf")
    w.add_tensor("a", "F32", (4,), lambda: np.zeros(5, np.float32))
    with pytest.raises(GGUFError, match=r"'a'.*returned 20 bytes, declared 16"):
        w.write()
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.gguf.tmp").exists()


def test_writer_rejects_bad_declarations(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    w.add_tensor_array("a", "F32", np.zeros(2, np.float32))
    with pytest.raises(GGUFError, match="'a' added twice"):
        w.add_tensor_array("a", "F32", np.zeros(2, np.float32))
    with pytest.raises(GGUFError, match=r"I2_S needs K % 128.*K = 100"):
        w.add_tensor("b", "I2_S", (4, 100), lambda: b"")
    with pytest.raises(GGUFError, match=r"TQ2_0 needs K % 256"):
        w.add_tensor("c", "TQ2_0", (4, 128), lambda: b"")
    with pytest.raises(GGUFError, match=r"'d'.*TL1 needs a finite tl_scale"):
        w.add_tensor("d", "TL1", (64, 128), lambda: b"")
    with pytest.raises(UnsupportedTypeError, match="Q4_K"):
        w.add_tensor("e", "Q4_K", (4, 256), lambda: b"")
    with pytest.raises(GGUFError, match="tl_scale= / tiling= are for TL1/TL2 only"):
        w.add_tensor("f", "F32", (4,), lambda: b"", tl_scale=1.0)


@pytest.mark.parametrize("layout", ["int8", "hf_packed"])
def test_write_gguf_refuses_unconvertible_layouts(tmp_path, layout):
    t = ternary(4, 128)
    data = t if layout == "int8" else packing.pack_hf(t)
    w = TernaryWeight("w", layout, (4, 128), data, scale=np.float32(1))
    with pytest.raises(GGUFError, match=f"'w'.*{layout}.*convert"):
        write_gguf(tmp_path / "x.gguf", {}, {"w": w})


def test_write_gguf_progress(tmp_path, capsys):
    ws = ternary_weights()
    path = write_gguf(tmp_path / "p.gguf", {"general.architecture": "bitnet"},
                      {w.name: w for w in ws.values()}, progress=True)
    assert len(GGUFFile(path).tensor_infos) == 5


# ------------------------------------------------------------------------------------------
# TL tiling resolution and the 36/38/39 provenance rules
# ------------------------------------------------------------------------------------------


def _tl_file(tmp_path, *, tiling_in_writer=True, arch="bitnet", file_type=None, layout="tl2"):
    w_ = ternary_weights()[layout]
    w = GGUFWriter(tmp_path / f"{layout}-{arch}-{file_type}-{tiling_in_writer}.gguf")
    w.add_metadata("general.architecture", arch)
    if file_type is not None:
        w.add_metadata("general.file_type", file_type)
    w.add_tensor(w_.name, layout.upper(), w_.shape, lambda: w_.data, tl_scale=float(w_.scale),
                 tiling=w_.tiling if tiling_in_writer else None)
    return w.write(), w_


def test_tl_tiling_from_metadata_key(tmp_path):
    path, w = _tl_file(tmp_path)
    f = GGUFFile(path)
    assert f.metadata[TL_TILING_KEY] == ["32,256,32,96,32"]
    np.testing.assert_array_equal(f.tensors()[w.name].ternary(), w.ternary())


def test_tl_tiling_missing_names_tensor_and_how_to_pass_it(tmp_path):
    path, w = _tl_file(tmp_path, tiling_in_writer=False)
    f = GGUFFile(path)  # opening needs no tiling
    with pytest.raises(GGUFError, match=r"tl2: the tensor shapes \(M, K\) \(32, 256\) match no bitnet.cpp preset.*"
                                         r"tl_tiling='BM,BK,bm'.*legal for every shape: 32,96,32"):
        f.tensors()
    for spec in (TL2_TILING, "32,96,32", {w.name: TL2_TILING}, {(32, 256): TL2_TILING}, {(32, 256): "32/96/32"}):
        t = GGUFFile(path, tl_tiling=spec).tensors()[w.name]
        assert t.tiling == TL2_TILING
        np.testing.assert_array_equal(t.ternary(), w.ternary())
    with pytest.raises(GGUFError, match=r"'w\.tl2'.*illegal"):
        GGUFFile(path, tl_tiling=TLTiling(32, 100, 32)).tensors()


def test_tl1_preset_tiling(tmp_path):
    """A preset shape (bitnet_b1_58-large attention, 1536×1536) reads without any tiling given."""
    M = K = 1536
    tiling = TLTiling(128, 64, 64)
    t = ternary(M, K, 9)
    w = GGUFWriter(tmp_path / "preset.gguf")
    w.add_metadata("general.architecture", "bitnet")
    w.add_tensor("q", "TL1", (M, K), lambda: packing.pack_tl1(t, tiling), tl_scale=0.5)
    q = GGUFFile(w.write()).tensors()["q"]
    assert q.tiling == tiling
    np.testing.assert_array_equal(q.ternary(), t)


def test_type_39_provenance(tmp_path):
    # bitnet arch -> TL2; llama arch with the fork's ftype 39 -> TL2
    for arch, ft in (("bitnet", None), ("bitnet-b1.58", None), ("llama", 39)):
        path, w = _tl_file(tmp_path, arch=arch, file_type=ft)
        assert GGUFFile(path).tensor_info(w.name).type_name == "TL2"
    # no provenance -> MXFP4 (upstream meaning), refused with the evidence
    path, _ = _tl_file(tmp_path, arch="llama", file_type=38)
    with pytest.raises(UnsupportedTypeError, match=r"type 39 read as MXFP4.*'llama'.*file_type = 38.*as TL2 it needs 2080 bytes"):
        GGUFFile(path)


def test_type_36_bytes_matching_removed_upstream_type_are_refused(tmp_path):
    """A type-36 tensor [128, 4] whose offset gap (288 bytes) is exactly upstream's removed
    IQ4_NL_4_4 size (512/32·18), not I2_S's (512/4 + 32 = 160 -> 160), is refused as such."""
    body = _header_with_tensors({"general.architecture": "llama"}, [("x", (128, 4), 36, 0), ("y", (8,), 0, 288)])
    (tmp_path / "t36.gguf").write_bytes(body + bytes(288) + bytes(32))
    with pytest.raises(UnsupportedTypeError, match=r"'x'.*type 36 does not read as I2_S.*IQ4_NL_4_4.*288 bytes"):
        GGUFFile(tmp_path / "t36.gguf")
    # the same tensor with the I2_S gap (160) reads as I2_S
    body = _header_with_tensors({"general.architecture": "llama"}, [("x", (128, 4), 36, 0), ("y", (8,), 0, 160)])
    (tmp_path / "ok36.gguf").write_bytes(body + bytes(160) + bytes(32))
    assert GGUFFile(tmp_path / "ok36.gguf").tensor_info("x").type_name == "I2_S"


def _header_with_tensors(meta: dict, infos: list) -> bytes:
    """A minimal GGUF v3 header (string metadata only) + tensor infos, padded to 32."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(meta)))
    for k, v in meta.items():
        kb, vb = k.encode(), v.encode()
        out += struct.pack("<Q", len(kb)) + kb + struct.pack("<IQ", 8, len(vb)) + vb
    for name, dims, type_id, off in infos:
        nb = name.encode()
        out += struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", type_id, off)
    out += bytes(-len(out) % 32)
    return bytes(out)


def test_resolve_type_39_directly():
    """TL2 (32, 256): 2048 data bytes + the 32-byte slot = 2080; MXFP4 would be 8192/32·17 = 4352."""
    dims = (256, 32)
    assert gt.resolve_type_39(dims, {"general.architecture": "bitnet"}, room=2080).name == "TL2"
    assert gt.resolve_type_39(dims, {"general.file_type": 39}, room=2080).name == "TL2"
    # a larger gap that matches neither reading exactly is fine for TL2
    assert gt.resolve_type_39(dims, {"general.file_type": 39}, room=4096).name == "TL2"
    with pytest.raises(UnsupportedTypeError, match=r"'t'.*MXFP4.*4352 bytes"):
        gt.resolve_type_39(dims, {"general.architecture": "llama"}, room=4352, tensor="t")
    with pytest.raises(GGUFError, match=r"'t'.*read as TL2 does not fit.*needs 2080 bytes.*has 2000 bytes"):
        gt.resolve_type_39(dims, {"general.architecture": "bitnet"}, room=2000, tensor="t")
    # provenance says TL2 but the gap is exactly MXFP4's and not TL2's: the evidence disagrees
    with pytest.raises(UnsupportedTypeError, match=r"does not read as TL2.*match MXFP4"):
        gt.resolve_type_39(dims, {"general.architecture": "bitnet"}, room=4352)


def test_ggml_type_names():
    assert gt.describe(12) == "type 12 (Q4_K)"
    with pytest.raises(UnsupportedTypeError, match=r"type 12 \(Q4_K\) is not supported"):
        gt.get_readable(12)
    with pytest.raises(UnsupportedTypeError, match="ggml type id 99 is unknown"):
        gt.get_readable(99)
    assert gt.get_readable(36).name == "I2_S" and gt.TYPES[39].name == "TL2"
    assert gt.UPSTREAM_READING[39].name.startswith("MXFP4")
    # our block table agrees with gguf-py for every block type both know
    for tid, t in gt.TYPES.items():
        if t.block_elems and tid in QT._value2member_map_ and tid not in (36, 38, 39):
            assert gguf.GGML_QUANT_SIZES[QT(tid)] == (t.block_elems, t.block_bytes), t.name


# ------------------------------------------------------------------------------------------
# real files written by bitnet.cpp and llama.cpp
# ------------------------------------------------------------------------------------------

REAL_FILES = ["bitnet-f32.gguf", "bitnet-i2_s.gguf", "upstream-tq2_0.gguf", "upstream-tq1_0.gguf",
              "bitnetcpp2026-i2_s-embd-q6_k.gguf", "bitnetcpp2026-i2_s-embd-q8_0.gguf"]
I2S_FILES = ["bitnet-i2_s.gguf", "bitnetcpp2026-i2_s-embd-q6_k.gguf", "bitnetcpp2026-i2_s-embd-q8_0.gguf"]


@pytest.fixture(scope="module")
def f32_ref():
    with GGUFFile(REAL / "bitnet-f32.gguf") as f:
        return {k: v.to_numpy() for k, v in f.tensors().items()}


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_opens_and_matches_gguf_reader(name):
    path = REAL / name
    f = open_gguf(path)
    assert f.version == 3 and f.alignment == 32
    assert f.metadata["general.architecture"] == "bitnet"
    assert len(f.tensor_infos) == 24
    assert read_metadata(path) == f.metadata
    if name in I2S_FILES:
        # gguf-py cannot open type 36 (docs/formats.md#13-rules-for-a-reader-of-bitnet-files): confirm, then
        # compare with the F32 file
        with pytest.raises(ValueError):
            gguf.GGUFReader(path)
        ref = GGUFFile(REAL / "bitnet-f32.gguf").metadata
        assert {k: v for k, v in f.metadata.items() if k not in ("general.file_type", "general.quantization_version")} == {
            k: v for k, v in ref.items() if k != "general.file_type"}
        assert f.metadata["general.file_type"] == 40
        return
    assert gguf_reader_metadata(path) == f.metadata
    r = gguf.GGUFReader(path)
    assert {t.name: (int(t.data_offset), int(t.n_bytes), list(map(int, t.shape))) for t in r.tensors} == {
        ti.name: (ti.offset, ti.nbytes, list(ti.dims)) for ti in f.tensor_infos}


@pytest.mark.parametrize("name", [*I2S_FILES, "upstream-tq2_0.gguf", "upstream-tq1_0.gguf"])
def test_real_ternary_tensors_decode_to_the_f32_file(name, f32_ref):
    f = GGUFFile(REAL / name)
    tensors = f.tensors()
    ternary_names = [n for n, t in tensors.items() if isinstance(t, TernaryWeight)]
    assert len(ternary_names) == 14  # 7 projections × 2 layers
    for n in ternary_names:
        w = tensors[n]
        ref = f32_ref[n]
        assert w.shape == ref.shape
        if w.layout == "i2_s":
            np.testing.assert_array_equal(w.dequantize(), ref, err_msg=n)  # bit for bit
        else:
            # TQ: same ternary codes; values up to the fp16 block scale d (docs/formats.md#34-tq2_0-type-35)
            gamma = np.float32(np.abs(ref).max())
            np.testing.assert_array_equal(w.ternary(), np.sign(ref).astype(np.int8), err_msg=n)
            np.testing.assert_array_equal(w.block_scales, np.full_like(w.block_scales, np.float16(gamma)))
            np.testing.assert_array_equal(w.dequantize(), np.sign(ref) * np.float32(np.float16(gamma)))
    # every non-ternary tensor equals the F32 file up to its own storage type (Q8_0 / Q6_K: the
    # F32 values through llama.cpp's reference quantiser, docs/formats.md#24-how-q8_0-and-q6_k-are-quantised)
    for n, t in tensors.items():
        if isinstance(t, FloatTensor) and n in f32_ref:
            if t.ggml_type in ("Q8_0", "Q6_K"):
                want = blockquant.dequantize(t.ggml_type, blockquant.quantize(t.ggml_type, f32_ref[n]), t.shape)
            else:
                want = f32_ref[n].astype(t.data.dtype).astype(np.float32)
            np.testing.assert_array_equal(t.to_numpy(), want, err_msg=n)


def test_real_i2_s_scale_is_the_first_f32_of_the_tail(f32_ref):
    """Read independently with plain file I/O: the scale is bytes [M·K/4, M·K/4 + 4) of the blob
    and equals max|w| of the F32 file's tensor; the other 28 tail bytes are not checked."""
    path = REAL / "bitnet-i2_s.gguf"
    raw = path.read_bytes()
    f = GGUFFile(path)
    for ti in f.tensor_infos:
        if ti.type_name != "I2_S":
            continue
        M, K = ti.shape
        assert ti.nbytes == M * K // 4 + 32
        (s,) = struct.unpack_from("<f", raw, ti.offset + M * K // 4)
        w = f.tensor(ti.name)
        assert w.scale == np.float32(s) == np.abs(f32_ref[ti.name]).max()


def test_2026_i2_s_projections_are_the_2024_ones():
    """bitnet.cpp's 2026 llama-quantize keeps the x86 I2_S layout: each projection's codes and
    scale (the first 4 tail bytes) are those of bitnet-i2_s.gguf. The other 28 tail bytes are
    memory the quantiser leaves uninitialised: its two 2026 files, one build and one source,
    disagree there, so no reader may depend on them (and ours reads only the scale)."""
    old = GGUFFile(REAL / "bitnet-i2_s.gguf")
    q6, q8 = GGUFFile(REAL / I2S_FILES[1]), GGUFFile(REAL / I2S_FILES[2])
    tails_differ = 0
    for ti in old.tensor_infos:
        if ti.type_name != "I2_S":
            continue
        content = ti.shape[0] * ti.shape[1] // 4 + 4
        blobs = [np.asarray(f._blob(f.tensor_info(ti.name).offset, ti.nbytes)) for f in (old, q6, q8)]
        assert all(f.tensor_info(ti.name).nbytes == ti.nbytes for f in (q6, q8))
        assert np.array_equal(blobs[0][:content], blobs[1][:content]), ti.name
        assert np.array_equal(blobs[0][:content], blobs[2][:content]), ti.name
        tails_differ += not np.array_equal(blobs[1][content:], blobs[2][content:])
    assert tails_differ > 0


def test_rewrite_real_files(tmp_path, f32_ref):
    """Read a real file and write it back: same metadata (and types), same tensors; the TQ file
    written by us opens in gguf-py again."""
    for name in ("bitnet-i2_s.gguf", "upstream-tq2_0.gguf", "bitnetcpp2026-i2_s-embd-q6_k.gguf"):
        src = GGUFFile(REAL / name)
        out = write_gguf(tmp_path / name, src.metadata, src.tensors(), metadata_types=src.metadata_types)
        dst = GGUFFile(out)
        assert dst.metadata == src.metadata and dst.metadata_types == src.metadata_types
        a, b = src.tensors(), dst.tensors()
        for n in a:
            if isinstance(a[n], TernaryWeight):
                np.testing.assert_array_equal(a[n].dequantize(), b[n].dequantize())
            else:
                assert np.asarray(a[n].data).tobytes() == np.asarray(b[n].data).tobytes()
        if name.startswith("upstream"):
            assert gguf_reader_metadata(out) == src.metadata


def test_read_metadata_vocab_only():
    spm = VOCAB / "ggml-vocab-llama-spm.gguf"
    m = read_metadata(spm)
    assert m["tokenizer.ggml.model"] == "llama" and len(m["tokenizer.ggml.tokens"]) == 32000
    assert m == gguf_reader_metadata(spm)
    f = GGUFFile(spm)  # 0 tensors, no padding after the KV section
    assert f.tensor_infos == [] and f.tensors() == {}
