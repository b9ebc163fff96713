"""Q8_0 and Q6_K quantisers (bitnet_lab/quant/blockquant.py) against llama.cpp's reference
quantisers, as bitnet.cpp's 2026 ``llama-quantize --token-embedding-type q6_k|q8_0`` ran them
(tests/data/real-files/README.md), and against a scalar twin written here from the reference's
loops (docs/formats.md#24-how-q8_0-and-q6_k-are-quantised).

The twin walks each 16-value group the way ``make_qx_quants`` does (one value at a time, float32
scalars, fused multiply-adds computed exactly with fractions and rounded once), so it shares no
code with the vectorised quantiser; it is itself anchored on the real file below.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bitnet_lab.errors import CodecError
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.quant import blockquant as BQ

REAL = Path(__file__).resolve().parents[1] / "data" / "real-files"
F32 = np.float32


@pytest.fixture(scope="module")
def embd_f32() -> np.ndarray:
    """The F32 token embedding both 2026 files were quantised from (1000 × 256)."""
    with GGUFFile(REAL / "bitnet-f32.gguf") as f:
        return np.array(f.tensor("token_embd.weight").data, dtype=np.float32)


def _real_blocks(name: str) -> np.ndarray:
    with GGUFFile(REAL / name) as f:
        t = f.tensor("token_embd.weight")
        return np.array(t.data, dtype=np.uint8).reshape(-1)


# ---- the real files ----------------------------------------------------------------------------


@pytest.mark.parametrize("type_name,fname", [
    ("Q8_0", "bitnetcpp2026-i2_s-embd-q8_0.gguf"),
    ("Q6_K", "bitnetcpp2026-i2_s-embd-q6_k.gguf"),
])
def test_reproduces_bitnetcpp_token_embd_bytes(embd_f32, type_name, fname):
    with GGUFFile(REAL / fname) as f:
        assert f.tensor_info("token_embd.weight").type_name == type_name
    want = _real_blocks(fname)
    got = BQ.quantize(type_name, embd_f32)
    assert got.nbytes == want.nbytes
    differ = np.flatnonzero(got != want)
    assert differ.size == 0, f"{differ.size} bytes differ, first at byte {differ[:1]}"


# ---- a scalar twin of the reference loops ------------------------------------------------------


def _round_f32(v: Fraction) -> np.float32:
    """The exact rational ``v`` rounded once to float32, ties to even."""
    f = F32(float(v))  # within one float32 step of v; fix the direction exactly below
    if Fraction(float(f)) == v or not np.isfinite(f):
        return f
    lo, hi = (f, np.nextafter(f, F32(np.inf))) if Fraction(float(f)) < v else (np.nextafter(f, F32(-np.inf)), f)
    dlo, dhi = v - Fraction(float(lo)), Fraction(float(hi)) - v
    if dlo != dhi:
        return lo if dlo < dhi else hi
    return lo if int(np.array(lo).view(np.uint32)) % 2 == 0 else hi


def _muladd(a, b, c, fused: bool) -> np.float32:
    if not fused:
        return F32(F32(a) * F32(b)) + F32(c)
    return _round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _nearest(v) -> int:
    return int(np.rint(F32(v)))  # round half to even, as ggml's nearest_int


def _qx_twin(x, fused=True):
    """make_qx_quants(16, 32, x, L, rmse_type=1, NULL) one value at a time."""
    amax, top = F32(0), F32(0)
    for v in x:
        if abs(v) > amax:
            amax, top = abs(v), v
    if amax < F32(1e-15):
        return F32(0), [0] * 16

    def fit(iscale):
        sumlx = suml2 = F32(0)
        codes = []
        for v in x:
            l = min(31, max(-32, _nearest(F32(iscale * v))))
            codes.append(l)
            w = F32(v * v)
            sumlx = _muladd(F32(w * v), l, sumlx, fused)
            suml2 = _muladd(F32(w * F32(l)), l, suml2, fused)
        return codes, sumlx, suml2

    codes, sumlx, suml2 = fit(F32(F32(-32) / top))
    scale = F32(sumlx / suml2) if suml2 != 0 else F32(0)
    best = F32(scale * sumlx)
    for step in [*range(-9, 0), *range(1, 10)]:
        c, a, b = fit(F32(-(F32(32) + F32(0.1) * F32(step)) / top))
        if b > 0 and F32(a * a) > F32(best * b):
            codes, scale = c, F32(a / b)
            best = F32(scale * a)
    return scale, [l + 32 for l in codes]


def _q6_k_twin(block, fused=True) -> bytes:
    """quantize_row_q6_K_ref for one 256-value block, one value at a time."""
    with np.errstate(all="ignore"):  # the huge case overflows float32 on purpose, as the reference does
        return _q6_k_twin_body(block, fused)


def _q6_k_twin_body(block, fused) -> bytes:
    L, scales = [], []
    top, top_abs = F32(0), F32(0)
    for g in range(16):
        s, codes = _qx_twin(block[16 * g : 16 * g + 16], fused)
        scales.append(s)
        L += codes
        if abs(s) > top_abs:
            top, top_abs = s, abs(s)
    if top_abs < F32(1e-15):
        return bytes(210)
    iscale = F32(F32(-128) / top)
    d16 = np.float16(F32(F32(1) / iscale))
    sc = [min(127, _nearest(F32(iscale * s))) for s in scales]
    for g in range(16):
        d = F32(F32(d16) * F32(sc[g]))
        if d == 0:
            continue
        for i in range(16):
            L[16 * g + i] = min(31, max(-32, _nearest(F32(block[16 * g + i] / d)))) + 32
    ql, qh = bytearray(128), bytearray(64)
    for h in range(2):
        for l in range(32):
            q = [L[128 * h + 32 * j + l] for j in range(4)]
            ql[64 * h + l] = (q[0] & 15) | ((q[2] & 15) << 4)
            ql[64 * h + 32 + l] = (q[1] & 15) | ((q[3] & 15) << 4)
            qh[32 * h + l] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6)
    return bytes(ql) + bytes(qh) + np.array(sc, np.int8).tobytes() + np.array([d16], "<f2").tobytes()


def _q8_0_twin(block) -> bytes:
    """quantize_row_q8_0_ref for one 32-value block: roundf is half away from zero."""
    amax = max((abs(F32(v)) for v in block), default=F32(0))
    d = F32(amax / F32(127))
    with np.errstate(all="ignore"):
        inv = F32(F32(1) / d) if d != 0 else F32(0)
    q = []
    for v in block:
        with np.errstate(all="ignore"):
            t = float(F32(v * inv))  # exact in float64, so |t| + 0.5 below is exact too
        # x·inf (d below 2^-128): no int8 value; x86 builds write 0 there, and d is fp16 zero.
        q.append(int(np.sign(t) * np.floor(abs(t) + 0.5)) if np.isfinite(t) else 0)
    return np.array([d], "<f2").tobytes() + np.array(q, np.int8).tobytes()


# Blocks of the real embedding the twin replays (it is slow): the first three, and two where
# rounding each multiply and add separately picks another candidate scale than the fused
# arithmetic (found by running both over all 1000 blocks; the test recomputes the difference).
ANCHOR_BLOCKS = (0, 1, 2, 93, 102)


def test_twin_is_anchored_on_the_real_file(embd_f32):
    """The twin reproduces the real Q6_K blocks, and only with the multiply-adds fused: unfused,
    some blocks differ, so fused arithmetic is what the reference build computed."""
    want = _real_blocks("bitnetcpp2026-i2_s-embd-q6_k.gguf").reshape(-1, 210)
    blocks = embd_f32.reshape(-1, 256)
    unfused_differs = []
    for b in ANCHOR_BLOCKS:
        assert _q6_k_twin(blocks[b], fused=True) == want[b].tobytes(), f"block {b}"
        if _q6_k_twin(blocks[b], fused=False) != want[b].tobytes():
            unfused_differs.append(b)
    assert unfused_differs == [93, 102]


# ---- edge cases, against the twin --------------------------------------------------------------


def _edge_blocks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261207)
    z = np.zeros(256, F32)
    one = z.copy()
    one[77] = F32(-0.37)
    ties = np.resize(np.array([1, -1, 0.5, -0.5, 2, -2, 0, 0.25], F32), 256)  # many equal magnitudes
    neg = rng.standard_normal(256).astype(F32)
    neg[::16] = F32(-4)  # every group's max magnitude is negative and tied with later ones
    pos = np.abs(rng.standard_normal(256)).astype(F32)
    pos[3], pos[9] = F32(-3), F32(3)  # same magnitude, the negative one first
    sparse = z.copy()
    sparse[16:32] = rng.standard_normal(16).astype(F32)  # one live group, fifteen all-zero groups
    return {
        "all_zero": z,
        "one_nonzero": one,
        "ties": ties,
        "negative_max": neg,
        "first_of_equal_magnitudes": pos,
        "one_live_group": sparse,
        "tiny": (rng.standard_normal(256) * 1e-14).astype(F32),      # x³ underflows: reference writes 0s
        "subnormal": (rng.standard_normal(256) * 1e-41).astype(F32),
        "huge": (rng.standard_normal(256) * 3e5).astype(F32),        # sumlx² overflows float32
        "mixed": (rng.standard_normal(256) * np.exp(rng.uniform(-12, 12, 256))).astype(F32),
    }


@pytest.mark.parametrize("case", list(_edge_blocks()))
def test_q6_k_edge_cases_match_the_twin(case):
    block = _edge_blocks()[case]
    assert BQ.quantize("Q6_K", block).tobytes() == _q6_k_twin(block)


@pytest.mark.parametrize("case", list(_edge_blocks()))
def test_q8_0_edge_cases_match_the_twin(case):
    block = _edge_blocks()[case]
    want = b"".join(_q8_0_twin(block[i : i + 32]) for i in range(0, 256, 32))
    assert BQ.quantize("Q8_0", block).tobytes() == want


def test_q8_0_rounds_half_away_from_zero():
    x = np.zeros(32, F32)
    x[:6] = [127, 0.5, -0.5, 1.5, -2.5, 63.5]  # d = 1 exactly: x·(1/d) = x
    q = BQ.quantize("Q8_0", x)[2:].view(np.int8)
    assert q[:6].tolist() == [127, 1, -1, 2, -3, 64]  # half away, not half even (which gives 0, 2, -2)


def test_all_zero_blocks_are_zero_bytes():
    assert not BQ.quantize("Q6_K", np.zeros((2, 512), F32)).any()
    q8 = BQ.quantize("Q8_0", np.zeros((2, 64), F32))
    assert not q8.any()


def test_q6_k_one_nonzero_decodes_back():
    """One value v in a block: its group gets the int8 scale -128 and v the code ∓32, so v comes
    back as 32·128·fp16(v/4096) up to sign, within fp16's relative step while v/4096 is an fp16
    normal (|v| ≥ 0.25); every other value is exactly 0."""
    for v in (F32(-0.37), F32(0.25), F32(123.0), F32(-3000.0)):
        x = np.zeros(256, F32)
        x[200] = v
        back = BQ.dequantize("Q6_K", BQ.quantize("Q6_K", x), (256,))
        assert np.count_nonzero(back) == 1
        assert abs(back[200] - v) <= abs(v) * 2.0**-10


def test_q6_k_tiny_blocks_underflow_to_zero():
    """Values near 1e-14 pass the all-zero test (1e-15) but their cubes underflow float32, so the
    reference's least-squares scale is 0 and the block is written as zeros; we do the same."""
    x = (np.random.default_rng(1).standard_normal(256) * 1e-14).astype(F32)
    assert not BQ.quantize("Q6_K", x).any()


# Q8_0: half a step (amax/254) plus the fp16 rounding of d (2^-11 relative, times |q| ≤ 127).
# Q6_K: measured ≈ max/62 on this data (half a step of about max/31); asserted with a margin.
@pytest.mark.parametrize("type_name,block,bound", [("Q8_0", 32, 1 / 254 + 2.0**-11), ("Q6_K", 256, 1 / 32)])
def test_roundtrip_error_bound(type_name, block, bound):
    """Per block, max |x − decode(encode(x))| ≤ bound · max |x|."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 512)) * rng.uniform(1e-3, 50, (64, 1))).astype(F32)
    x *= np.exp(rng.uniform(-4, 4, x.shape)).astype(F32)  # heavy tails: groups of very different size
    back = BQ.dequantize(type_name, BQ.quantize(type_name, x), x.shape)
    err = np.abs(back - x).reshape(-1, block).max(axis=1)
    amax = np.abs(x).reshape(-1, block).max(axis=1)
    assert (err <= bound * amax).all(), float((err / amax).max())


# ---- errors --------------------------------------------------------------------------------------


def test_values_beyond_the_formats_are_refused():
    with pytest.raises(CodecError, match="Q8_0: block 1 .*beyond fp16's 65504"):
        BQ.quantize("Q8_0", np.r_[np.zeros(32, F32), np.full(32, 1e7, F32)])
    with pytest.raises(CodecError, match="Q6_K: block 0 .*beyond fp16's 65504"):
        BQ.quantize("Q6_K", np.full(256, 3e8, F32))
    with pytest.raises(CodecError, match="Q6_K: a 16-value group .* overflows the float32 least-squares"):
        BQ.quantize("Q6_K", np.full(256, 1e13, F32))
    with pytest.raises(CodecError, match="Q6_K: x has 1 non-finite values"):
        BQ.quantize("Q6_K", np.r_[np.zeros(255, F32), F32(np.inf)])
    with pytest.raises(CodecError, match="not a multiple of the block size 256"):
        BQ.quantize("Q6_K", np.zeros((2, 128), F32))


# ---- the fused multiply-add emulation ------------------------------------------------------------


def test_fma_f32_rounds_once():
    """Against exact rationals, including products that sit exactly on a float32 midpoint
    (where rounding through float64 first would round twice and can land wrong)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal(2000).astype(F32)
    b = rng.integers(-32, 32, 2000).astype(F32)
    c = (rng.standard_normal(2000) * np.exp(rng.uniform(-30, 30, 2000))).astype(F32)
    # midpoint cases: a·b = 1 + 2^-24 (a float32 midpoint), c a tiny nudge either way
    # (1 + 2^-12)² = 1 + 2^-11 + 2^-24: halfway between two float32 neighbours
    a[:4] = b[:4] = F32(1 + 2.0**-12)
    c[:4] = [F32(2.0**-60), F32(-(2.0**-60)), F32(0), F32(2.0**-23)]
    got = BQ._fma_f32(a, b, c)
    want = np.array([_round_f32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                     for x, y, z in zip(a, b, c)], F32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    naive = (a.astype(np.float64) * b + c).astype(F32)
    assert not np.array_equal(naive, want), "no double-rounding case in the sample: the test lost its power"
    # the fast path the Q6_K sums take (sums that are 0 or float32 normals) agrees
    normal = (want == 0) | (np.abs(want) >= np.float32(2.0**-126))
    fast = BQ._fused_add(a.astype(np.float64) * b.astype(np.float64), c)
    assert normal.all() and np.array_equal(fast.view(np.uint32), want.view(np.uint32))
