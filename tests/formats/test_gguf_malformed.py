"""Malformed GGUF files: every failure is a GGUFError (or UnsupportedTypeError) whose message
names the offending key / tensor and the numbers — never an IndexError, struct.error,
MemoryError or numpy error, never a huge allocation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gguf_builder import ARRAY, BOOL, FLOAT32, STRING, UINT32, GGUFBuilder, small_model

from bitnet_lab.errors import GGUFError, UnsupportedTypeError
from bitnet_lab.formats.gguf import GGUFFile, read_metadata

BASE = small_model().build()
# the last tensor's data ends here; after it only the final alignment padding follows
DATA_END = BASE.marks["t:w.tq1"] + 2 * 54


def open_bytes(tmp_path, data: bytes, *, tensors: bool = True):
    p = tmp_path / "m.gguf"
    p.write_bytes(data)
    f = GGUFFile(p)
    if tensors:
        for t in f.tensors().values():
            t.ternary() if hasattr(t, "ternary") else t.to_numpy()
    return f


def expect(tmp_path, data: bytes, pattern: str, exc=GGUFError):
    with pytest.raises(exc) as ei:
        open_bytes(tmp_path, data)
    assert re.search(pattern, str(ei.value)), str(ei.value)
    return str(ei.value)


def test_base_file_is_valid(tmp_path):
    f = open_bytes(tmp_path, BASE.data)
    assert len(f.tensor_infos) == 7 and f.metadata["tokenizer.ggml.tokens"][3] == "Ġb"
    # trailing padding after the last tensor is optional
    open_bytes(tmp_path, BASE.data[:DATA_END])


# ------------------------------------------------------------------------------------------
# truncation: at every section / entry boundary and inside each
# ------------------------------------------------------------------------------------------


def _cut_points() -> list[int]:
    bounds = sorted(set(BASE.marks.values()) | {DATA_END})
    pts = set()
    for a, b in zip(bounds, bounds[1:]):
        pts |= {a, a + 1, (a + b) // 2, b - 1}
    return sorted(p for p in pts if p < DATA_END)


@pytest.mark.parametrize("cut", _cut_points())
def test_truncated(tmp_path, cut):
    msg = expect(tmp_path, BASE.data[:cut], rf"file size {cut}\b")
    assert re.search(r"truncated|exceeds|past the end|cannot fit|not a GGUF", msg), msg


def test_truncated_read_metadata(tmp_path):
    cut = BASE.marks["kv:tokenizer.ggml.tokens.value"] + 20
    (tmp_path / "t.gguf").write_bytes(BASE.data[:cut])
    with pytest.raises(GGUFError, match=rf"tokenizer\.ggml\.tokens.*file size {cut}"):
        read_metadata(tmp_path / "t.gguf")


def test_empty_and_missing_files(tmp_path):
    expect(tmp_path, b"", r"not a GGUF file.*file size 0")
    expect(tmp_path, b"GGUF\x03\x00", r"truncated.*24-byte GGUF header.*file size 6")
    with pytest.raises(GGUFError, match="cannot open"):
        GGUFFile(tmp_path / "does-not-exist.gguf")
    with pytest.raises(GGUFError, match="cannot map the file"):
        GGUFFile(tmp_path)  # a directory


# ------------------------------------------------------------------------------------------
# lying sizes and counts
# ------------------------------------------------------------------------------------------

LIES = [
    # (field, value, expected message)
    ("kv:general.architecture.key.len", 2**63, r"metadata key #0.*string length 9223372036854775808 .*exceeds"),
    ("kv:general.name.len", 10**6, r"'general\.name'.*string length 1000000 .*exceeds"),
    ("kv:tokenizer.ggml.scores.count", 2**62, r"'tokenizer\.ggml\.scores'.*array of 4611686018427387904 FLOAT32.*needs"),
    ("kv:tokenizer.ggml.token_type.count", 2**64 - 1, r"'tokenizer\.ggml\.token_type'.*array of 18446744073709551615 INT32"),
    ("kv:tokenizer.ggml.tokens.count", 2**40, r"'tokenizer\.ggml\.tokens'.*array of 1099511627776 strings"),
    ("kv:tokenizer.ggml.tokens[1].len", 5000, r"'tokenizer\.ggml\.tokens'\[1\].*string length 5000"),
    ("tensor_count", 2**60, r"tensor_count 1152921504606846976 cannot fit"),
    ("kv_count", 2**64 - 1, r"metadata_kv_count 18446744073709551615 cannot fit"),
    ("ti:emb.n_dims", 5, r"'emb'.*n_dims = 5"),
    ("ti:emb.n_dims", 0, r"'emb'.*n_dims = 0"),
    ("ti:emb.n_dims", 2**32 - 1, r"'emb'.*n_dims = 4294967295"),
    ("ti:norm.dim0", 0, r"'norm'.*dims \[0\] contain a 0"),
    ("ti:norm.dim0", 2**62, r"'norm'.*dims \[4611686018427387904\] hold .* elements"),
    ("ti:emb.dim1", 2**64 - 1, r"'emb'.*dims \[32, 18446744073709551615\]"),
    ("ti:norm.name.len", 2**63 + 5, r"tensor info #0 \(name\).*string length"),
    ("ti:norm.offset", 2**63, r"'norm'.*data starts at .* past the end of the file"),
    ("ti:emb.offset", 64 + 1, r"'emb'.*offset 65 is not a multiple of the alignment 32"),
    ("ti:w.tq1.offset", 2**64 - 32, r"'w\.tq1'.*past the end of the file"),
    ("ti:emb.type", 99, r"'emb'.*ggml type id 99 is unknown"),
    ("ti:emb.type", 12, r"'emb'.*type 12 \(Q4_K\) is not supported"),
    ("ti:emb.type", 37, r"'emb'.*type 37 \(I8_S"),
    ("kv:bitnet.block_count.vtype", 13, r"'bitnet\.block_count'.*unknown value type 13"),
    ("kv:bitnet.block_count.vtype", 2**32 - 1, r"'bitnet\.block_count'.*unknown value type 4294967295"),
    ("kv:tokenizer.ggml.scores.etype", 99, r"'tokenizer\.ggml\.scores'.*unknown array element type 99"),
    ("version", 1, r"version 1 .*not supported"),
    ("version", 4, r"unsupported GGUF version 4"),
    ("version", 0x03000000, r"big-endian.*byte-swapped 3"),
    ("version", 0x02000000, r"big-endian.*byte-swapped 2"),
]


@pytest.mark.parametrize("label,value,pattern", LIES, ids=[f"{a}={b}" for a, b, _ in LIES])
def test_lying_field(tmp_path, label, value, pattern):
    exc = UnsupportedTypeError if "type" in label and label.startswith("ti:") else GGUFError
    expect(tmp_path, BASE.patched(label, value), pattern, exc)


def test_one_more_tensor_than_written(tmp_path):
    # the reader then parses the padding and the data as a tensor info: any GGUFError will do,
    # but it must not crash or allocate
    with pytest.raises(GGUFError):
        open_bytes(tmp_path, BASE.patched("tensor_count", 8))
    with pytest.raises(GGUFError):
        open_bytes(tmp_path, BASE.patched("kv_count", 9))


def test_overlapping_tensors(tmp_path):
    off_bf = BASE.field("ti:bf.offset")
    rel_bf = int.from_bytes(BASE.data[off_bf[0]: off_bf[0] + 8], "little")
    data = BASE.patched("ti:q8.offset", rel_bf)
    expect(tmp_path, data, r"'(bf|q8)'.*overlaps tensor '(q8|bf)'.*only 0 bytes between them")
    # partial overlap: emb (256 bytes) followed by bf 32 bytes later
    off_emb = BASE.field("ti:emb.offset")
    rel_emb = int.from_bytes(BASE.data[off_emb[0]: off_emb[0] + 8], "little")
    expect(tmp_path, BASE.patched("ti:bf.offset", rel_emb + 32),
           r"'emb': F16 data of 256 bytes at offset \d+ overlaps tensor 'bf'.*only 32 bytes")


def test_bad_magic(tmp_path):
    expect(tmp_path, b"GGUX" + BASE.data[4:], r"not a GGUF file: magic is b'GGUX'")
    expect(tmp_path, b"\x00" * len(BASE.data), r"magic is b'\\x00\\x00\\x00\\x00'")


def test_bad_bool(tmp_path):
    at = BASE.marks["kv:tokenizer.ggml.add_bos_token.value"]
    data = bytearray(BASE.data)
    data[at] = 2
    expect(tmp_path, bytes(data), r"'tokenizer\.ggml\.add_bos_token'.*bool byte 2")


def _file(kvs=(), tensors=(), **kw) -> bytes:
    b = GGUFBuilder(**kw)
    for kv in kvs:
        b.add_kv(*kv)
    for t in tensors:
        b.add_tensor(*t)
    return b.build().data


F32_BLOB = np.zeros(8, "<f4").tobytes()


def test_duplicates(tmp_path):
    expect(tmp_path, _file([("a", STRING, "x"), ("a", STRING, "y")]), r"metadata key 'a' \(#1.*appears twice")
    expect(tmp_path, _file(tensors=[("t", (8,), 0, F32_BLOB), ("t", (8,), 0, F32_BLOB)]),
           r"tensor 't' \(info #1.*appears twice")


@pytest.mark.parametrize("align", [48, 0, 3])
def test_bad_alignment(tmp_path, align):
    expect(tmp_path, _file([("general.alignment", UINT32, align)]), rf"'general\.alignment' = {align} is not a positive power of two")


def test_alignment_of_wrong_type(tmp_path):
    expect(tmp_path, _file([("general.alignment", STRING, "32")]), r"'general\.alignment' = '32'")


def test_huge_alignment_puts_data_past_the_end(tmp_path):
    data = _file([("general.alignment", UINT32, 2**31)], [("t", (8,), 0, F32_BLOB)])
    expect(tmp_path, data, r"data section would start at 2147483648.*alignment 2147483648.*file size")


def test_invalid_utf8_key(tmp_path):
    data = _file([("abc", STRING, "x")])
    data = data.replace(b"abc", b"a\xffc")
    expect(tmp_path, data, r"metadata key #0.*not valid UTF-8")


def test_invalid_utf8_in_a_string_array_names_the_entry(tmp_path):
    data = _file([("tokenizer.ggml.tokens", ARRAY, ["ok", "a\u00e9c", "fine"], STRING)])
    data = data.replace("a\u00e9c".encode(), b"a\xc3(c")  # same length, a broken 2-byte sequence
    expect(tmp_path, data, r"'tokenizer\.ggml\.tokens'\[1\]: string at offset \d+ is not valid UTF-8 \(invalid continuation byte\)")


def _python_strings(buf: bytes, pos: int, count: int) -> tuple[list[str], int]:
    """The plain reading of a GGUF string array (u64 length, then UTF-8 bytes): the scanner's judge."""
    out = []
    for _ in range(count):
        n = int.from_bytes(buf[pos : pos + 8], "little")
        out.append(buf[pos + 8 : pos + 8 + n].decode("utf-8"))
        pos += 8 + n
    return out, pos


def test_the_compiled_string_scanner_agrees_with_a_plain_reading_and_stops_at_the_bad_entry():
    from bitnet_lab.kernels.native import _k

    rng = np.random.default_rng(7)
    alphabet = ["a", "Ġ", "é", "日本", "🙂", " ", "\n", "<0x0A>", ""]
    strings = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 6)))) for _ in range(500)]
    body = b"".join(len(s.encode()).to_bytes(8, "little") + s.encode() for s in strings)
    buf = b"\x01\x02\x03" + body + b"tail"
    got, pos, i, status = _k.gguf_strings(buf, 3, len(strings))
    assert (got, pos, i, status) == (*_python_strings(buf, 3, len(strings)), len(strings), _k.GGUF_STRINGS_OK)
    assert _k.gguf_strings(buf, 3, 0) == ([], 3, 0, _k.GGUF_STRINGS_OK)
    # the 4th entry (index 3) broken three ways; the first three come back, pos at its length field
    at = 3 + sum(8 + len(s.encode()) for s in strings[:3])
    for cut_at, status in ((at + 5, _k.GGUF_STRINGS_TRUNCATED_LENGTH), (at + 8 + len(strings[3].encode()) - 1, None)):
        got, pos, i, st = _k.gguf_strings(buf[:cut_at], 3, len(strings))
        assert got == strings[:3] and pos == at and i == 3
        assert st == (status or (_k.GGUF_STRINGS_TOO_LONG if strings[3] else _k.GGUF_STRINGS_TRUNCATED_LENGTH))
    huge = bytearray(buf)
    huge[at : at + 8] = (2**64 - 1).to_bytes(8, "little")  # no wrap-around past the end
    assert _k.gguf_strings(bytes(huge), 3, len(strings))[1:] == (at, 3, _k.GGUF_STRINGS_TOO_LONG)
    bad = bytearray(buf)
    bad[at : at + 9] = (1).to_bytes(8, "little") + b"\xff"
    got, pos, i, st = _k.gguf_strings(bytes(bad[: at + 9]) + b"\x00" * 8, 3, 4)
    assert (got, pos, i, st) == (strings[:3], at, 3, _k.GGUF_STRINGS_BAD_UTF8)
    with pytest.raises(ValueError):
        _k.gguf_strings(buf, len(buf) + 1, 1)


def test_nested_arrays_too_deep(tmp_path):
    # a 9-deep chain of one-element arrays, built by hand
    import struct

    value = struct.pack("<I", UINT32) + struct.pack("<Q", 1) + struct.pack("<I", 7)
    for _ in range(9):
        value = struct.pack("<I", ARRAY) + struct.pack("<Q", 1) + value
    key = b"deep"
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", ARRAY) + value
    expect(tmp_path, body, r"'deep.*nested deeper than 8")


@pytest.mark.parametrize(
    "dims,type_id,blob,pattern",
    [
        ((100, 4), 36, bytes(132), r"'w'.*I2_S needs K % 128.*K = 100"),
        ((128, 2), 35, bytes(66), r"'w'.*TQ2_0 needs K % 256.*K = 128"),
        ((256, 2, 2), 35, bytes(264), r"'w'.*TQ2_0 is a 2-D weight \[K, M\], got dims \[256, 2, 2\]"),
        ((48, 2), 8, bytes(102), r"'w'.*Q8_0 needs ne0 % 32 == 0.*ne0 = 48"),
        # 100 bytes, padded to 128 by the builder: I2_S needs M·K/4 + 32 = 160
        ((128, 4), 36, bytes(100), r"'w'.*type 36 read as I2_S does not fit.*needs 160 bytes.*has 128 bytes"),
    ],
    ids=["i2_s-K100", "tq2_0-K128", "tq2_0-3d", "q8_0-ne0-48", "i2_s-short"],
)
def test_layout_constraints(tmp_path, dims, type_id, blob, pattern):
    expect(tmp_path, _file([("general.architecture", STRING, "bitnet")], [("w", dims, type_id, blob)]), pattern)


def test_i2_s_scale_must_be_finite(tmp_path):
    from bitnet_lab.quant import packing

    blob = packing.i2_s_blob(np.zeros((4, 128), np.int8), 1.0).tobytes()
    blob = blob[:128] + np.array([np.nan], "<f4").tobytes() + blob[132:]
    p = tmp_path / "n.gguf"
    p.write_bytes(_file([("general.architecture", STRING, "bitnet")], [("w", (128, 4), 36, blob)]))
    f = GGUFFile(p)  # the header is fine
    with pytest.raises(GGUFError, match=r"'w'.*I2_S scale.*is nan"):
        f.tensors()


def test_tq_block_scales_must_be_finite(tmp_path):
    from bitnet_lab.quant import packing

    d = np.array([[0.5], [np.inf]], np.float16)
    blob = packing.pack_tq2_0(np.zeros((2, 256), np.int8), d).tobytes()
    p = tmp_path / "n.gguf"
    p.write_bytes(_file([("general.architecture", STRING, "bitnet")], [("w", (256, 2), 35, blob)]))
    with pytest.raises(GGUFError, match=r"'w'.*1 TQ2_0 block scales are not finite; first d\[1, 0\] = inf"):
        GGUFFile(p).tensors()


def test_tl_slot_past_the_end(tmp_path):
    """A TL1 tensor whose data fits but whose hidden scale slot does not."""
    data = _file([("general.architecture", STRING, "bitnet")], [("w", (128, 64), 38, bytes(2048))])
    expect(tmp_path, data, r"'w'.*does not fit the file.*as TL1 it needs 2080 bytes.*has 2048 bytes")


def test_bad_tiling_key(tmp_path):
    expect(tmp_path, _file([("bitnet_lab.tl_tiling", ARRAY, ["1,2,3"], STRING)]),
           r"'bitnet_lab\.tl_tiling': entry '1,2,3' is not 'M,K,BM,BK,bm'")
    expect(tmp_path, _file([("bitnet_lab.tl_tiling", FLOAT32, 1.0)]), r"'bitnet_lab\.tl_tiling' must be an array")
    expect(tmp_path, _file([("bitnet_lab.tl_tiling", ARRAY, ["1,2,3,4,5", "1,2,3,4,6"], STRING)]),
           r"shape \(1, 2\) has two tilings")


def test_bool_array_and_counts_without_tensors(tmp_path):
    b = GGUFBuilder().add_kv("flags", ARRAY, [True, False], BOOL).build()
    assert open_bytes(tmp_path, b.data).metadata["flags"] == [True, False]
    at = b.marks["kv:flags.value"] + 4 + 8 + 1  # element type, count, first element
    bad = b.data[:at] + b"\x05" + b.data[at + 1:]
    expect(tmp_path, bad, r"'flags'.*bool array .* holds a byte 5")
