"""Kernel microbenchmarks on the real shapes of a layout: every version × ISA × thread count.

For a layout (default the 2B-4T: q/o 2560×2560, k/v 640×2560, gate/up 6912×2560, down 2560×6912
and the lm_head 128256×2560) :func:`kernel_bench` times each numbered kernel version the CPU can
run (``kernels.kernel_versions()`` for the MAD family, ``kernels.lut_kernel_versions()`` for TL1 /
TL2) at each thread count, on one random ternary tensor per shape packed once per format.

llm.c's rule: validate, then time. Before any timing, every (op, version, threads) result is
compared with the exact integer product ``t @ q`` computed in numpy (int32, in row blocks, so
even the lm_head shape stays light); a kernel that disagrees gets a row saying so and no figure.
(``kernels.microbench`` does the same for one op on freshly generated data; here the data of a
shape is shared by every version, so the lm_head is packed once, not once per version.)

Figures per row: microseconds per call (median; fastest in ``us_min``), GOP/s counting a
multiply and an add as 2 operations, GB/s of the bytes a call must move once (packed weights,
activations, int32 outputs). Repeats stop early once a row has used ``budget_s`` of time
(at least 3 calls), so the slow scalar versions do not dominate the run. Python call overhead
(a few µs) is inside every figure.

The lm_head shape also gets the engine's own lm_head kernels (``bitnet_lab.kernels.lmhead``), one
version per float level (v0 float_scalar, v1 float_avx2, v2 float_avx512 / lm_q6k_*): F16 rows (the
2B-4T's), F32 rows (what a widened Q6_K lm_head used to be), Q8_0 and Q6_K rows with llama.cpp's
dots. Their hidden state is quantised once, outside the timed call (the GEMV alone), and each is
checked bit for bit against its numpy twin (quant/f32_dot.py, q8_0_dot.py, q6_k.py) first. The
I2_S GEMVs on that shape show what a 2-bit lm_head would cost.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitnet_lab.bench.table import Column, Table
from bitnet_lab.errors import BitnetLabError, KernelError

GEMV_OPS = ("i2s_gemv", "i2s_x4_gemv", "tq2_gemv", "tq1_gemv", "tq1_x16_gemv", "tl1_gemv", "tl2_gemv")
DEFAULT_OPS = ("quantize_act", "i2s_gemv", "i2s_x4_gemv", "tq2_gemv", "tq1_gemv", "tq1_x16_gemv", "tl1_gemv", "tl2_gemv",
               "i2s_gemm", "i2s_x4_gemm", "tl1_gemm", "tl2_gemm")
LUT_OPS = ("tl1_gemv", "tl2_gemv", "tl1_gemm", "tl2_gemm")  # versions from kernels.lut_kernel_versions()
# the engine's lm_head kernels: rows of this format against a float hidden state (module docstring)
LM_FLOAT_OPS = ("f16_lm_gemv", "f32_lm_gemv", "q8_0_lm_gemv", "q6_k_lm_gemv")
LM_HEAD_OPS = ("i2s_gemv", "i2s_x4_gemv", *LM_FLOAT_OPS)
# versions of the float-side kernels: (version, the ISA level whose float table holds it)
_FLOAT_VERSIONS = (("v0", "scalar"), ("v1", "avx2"), ("v2", "avx512vnni"))
ROW_BLOCK = 4096  # rows per block of the numpy reference product


@dataclass(frozen=True)
class KernelShape:
    """One weight shape (M, K) and the projections that have it."""

    name: str
    M: int
    K: int


def layout_shapes(layout: str, *, lm_head: bool = True) -> list[KernelShape]:
    """The distinct projection shapes of a layout (named by their projections), then the lm_head."""
    from bitnet_lab.tools.layouts import layout_config

    cfg = layout_config(layout)
    by_shape: dict[tuple[int, int], list[str]] = {}
    for proj, mk in cfg.projection_shapes().items():
        by_shape.setdefault(mk, []).append(proj)
    out = [KernelShape("/".join(p.replace("attn_", "").replace("ffn_", "") for p in names), M, K)
           for (M, K), names in by_shape.items()]
    if lm_head:
        out.append(KernelShape("lm_head", cfg.vocab, cfg.hidden))
    return out


class _ShapeData:
    """Random data of one shape, packed lazily once per format, with the exact products."""

    def __init__(self, shape: KernelShape, gemm_n: int, rng: np.random.Generator) -> None:
        self.shape = shape
        M, K = shape.M, shape.K
        self.t = rng.integers(-1, 2, size=(M, K), dtype=np.int8)
        self.q = rng.integers(-127, 128, size=K, dtype=np.int8)
        self.Q = rng.integers(-127, 128, size=(gemm_n, K), dtype=np.int8)
        self.x = rng.standard_normal((1, K), dtype=np.float32)
        self._packed: dict[str, Any] = {}
        self._want: dict[str, np.ndarray] = {}
        self._lm: dict[str, tuple[np.ndarray, Any, np.ndarray]] = {}
        self._rng = rng

    def lm_case(self, op: str) -> tuple[np.ndarray, Any, np.ndarray]:
        """(rows, hidden-state operand or None, the twin's logits) of an lm_head op: random rows of
        the format (finite fp16 block scales) against ``self.x``."""
        if op not in self._lm:
            from bitnet_lab.kernels import lmhead
            from bitnet_lab.quant import f32_dot, q6_k, q8_0_dot

            self._lm.clear()  # one format in memory at a time (1.3 GB of F32 rows for the 2B-4T)
            M, K, rng = self.shape.M, self.shape.K, self._rng
            if op in ("f16_lm_gemv", "f32_lm_gemv"):
                rows = (0.05 * rng.standard_normal((M, K), dtype=np.float32))
                rows = rows.astype(np.float16) if op == "f16_lm_gemv" else rows
                self._lm[op] = rows, None, f32_dot.f32_dot_canonical(rows, self.x)
            else:
                block, nbytes, at = (32, 34, 0) if op == "q8_0_lm_gemv" else (256, 210, 208)
                rows = rng.integers(0, 256, (M, K // block, nbytes), dtype=np.uint8)
                d = rng.uniform(1e-3, 2e-2, (M, K // block)).astype(np.float16)
                rows[:, :, at:at + 2] = d.view(np.uint8).reshape(M, K // block, 2)
                rows = rows.reshape(M, -1)
                if op == "q8_0_lm_gemv":
                    operand = q8_0_dot.quantize_q8_0_act(self.x)
                    want = q8_0_dot.q8_0_dot_q8_0(rows, K, operand[1], operand[0])
                else:
                    operand = lmhead.q8_k_operand(self.x)
                    want = q6_k.q6_k_dot_q8_k(rows, K, operand[1], operand[0])
                self._lm[op] = rows, operand, want
        return self._lm[op]

    def packed(self, fmt: str) -> Any:
        if fmt not in self._packed:
            from bitnet_lab import kernels
            from bitnet_lab.quant import packing, tiling

            t, (M, K) = self.t, (self.shape.M, self.shape.K)
            if fmt == "i2s":
                self._packed[fmt] = kernels.pack_i2_s(t)
            elif fmt == "i2s_x4":  # the engine's re-order of I2_S (src/bl_mad.h)
                self._packed[fmt] = kernels.i2s_x4_interleave(self.packed("i2s"), M, K)
            elif fmt in ("tq2", "tq1"):
                d = packing.tq_default_block_scales(t, 1.0)
                self._packed[fmt] = (packing.pack_tq2_0 if fmt == "tq2" else packing.pack_tq1_0)(t, d)
            elif fmt == "tq1_x16":  # the engine's re-order of TQ1_0 (src/bl_mad.h)
                self._packed[fmt] = kernels.tq1_x16_interleave(self.packed("tq1"), M, K)
            elif fmt in ("tl1", "tl2"):
                til = tiling.default_tiling(fmt, M, K)
                data = (packing.pack_tl1 if fmt == "tl1" else packing.pack_tl2)(t, til)
                self._packed[fmt] = (data, til)
            else:  # pragma: no cover - guarded by the op table
                raise BitnetLabError(f"unknown packed format {fmt!r}")
        return self._packed[fmt]

    def want(self, kind: str) -> np.ndarray:
        """Exact Σ t·q: "gemv" int32 (M,), "gemm" int32 (N, M) — int32 matmul in row blocks
        (exact: |Σ| ≤ 128·K)."""
        if kind not in self._want:
            acts = self.q[None, :] if kind == "gemv" else self.Q
            a = acts.astype(np.int32)
            out = np.empty((a.shape[0], self.shape.M), dtype=np.int32)
            for r0 in range(0, self.shape.M, ROW_BLOCK):
                out[:, r0 : r0 + ROW_BLOCK] = a @ self.t[r0 : r0 + ROW_BLOCK].astype(np.int32).T
            self._want[kind] = out[0] if kind == "gemv" else out
        return self._want[kind]


def _versions(op: str) -> list[tuple[str, str]]:
    """(version, isa level to run it on) of every implementation of ``op`` this CPU runs."""
    from bitnet_lab import kernels

    if op in LM_FLOAT_OPS:
        return [(v, isa) for v, isa in _FLOAT_VERSIONS if isa in kernels.available_isas()]
    if op in LUT_OPS:
        out = []
        for v in kernels.lut_kernel_versions():
            if v["op"] == op and v["default_for"]:
                level = v["isa"] if v["isa"] in v["default_for"] else v["default_for"][0]
                out.append((v["version"], level))
        return out
    return [(name, isa) for name, isa, _ in kernels.kernel_versions().get(op, [])]


def _runner(op: str, data: _ShapeData, version: str, isa: str, threads: int) -> tuple[Callable[[], Any], Callable[[Any], bool], float, float]:
    """(call, check(result) -> bool, operations per call, bytes per call) of one op."""
    from bitnet_lab import kernels
    from bitnet_lab.quant.ternary import quantize_activations

    M, K = data.shape.M, data.shape.K
    if op == "quantize_act":
        want = quantize_activations(data.x)
        call = lambda: kernels.quantize_act(data.x, threads=threads, version=version)
        check = lambda got: all(np.array_equal(a, b) for a, b in zip(got, want))
        return call, check, float(K), float(4 * K + K + 8)
    if op in LM_FLOAT_OPS:
        from bitnet_lab.kernels import lmhead

        rows, operand, want = data.lm_case(op)
        if operand is None:
            call = lambda: lmhead.lm_head_float(rows, K, data.x, isa=isa, threads=threads)
            moved = rows.nbytes + data.x.nbytes
        else:
            fn = lmhead.lm_head_q8_0 if op == "q8_0_lm_gemv" else lmhead.lm_head_q6_k
            call = lambda: fn(rows, K, None, isa=isa, threads=threads, operand=operand)
            moved = rows.nbytes + sum(a.nbytes for a in operand)
        check = lambda got: np.array_equal(got.view(np.uint32), want.view(np.uint32))
        return call, check, 2.0 * M * K, float(moved + 4 * M)
    fmt, kind = op.rsplit("_", 1)
    fn = getattr(kernels, op)
    acts = data.q if kind == "gemv" else data.Q
    if op in LUT_OPS:  # the tiling travels with the blob; a level, not a version, picks the code
        blob, til = data.packed(fmt)
        call = lambda: fn(blob, acts, M, K, til, threads=threads, isa=isa)
    else:
        blob = data.packed(fmt)
        call = lambda: fn(blob, acts, M, K, threads=threads, version=version)
    want = data.want(kind)
    n = 1 if kind == "gemv" else acts.shape[0]
    return call, (lambda got: np.array_equal(got, want)), 2.0 * M * K * n, float(blob.nbytes + acts.nbytes + 4 * M * n)


def _time(call: Callable[[], Any], repeat: int, budget_s: float,
          before: Callable[[], Any] | None = None) -> list[float]:
    """Seconds of up to ``repeat`` calls after one warm-up; stops once ``budget_s`` is used
    (never before 3 calls). ``before`` runs (untimed) ahead of every timed call."""
    call()
    out: list[float] = []
    spent = 0.0
    while len(out) < repeat and (len(out) < 3 or spent < budget_s):
        if before is not None:
            before()
        t0 = time.perf_counter()
        call()
        dt = time.perf_counter() - t0
        out.append(dt)
        spent += dt
    return out


def kernel_bench(
    layout: str = "2B-4T",
    *,
    ops: Sequence[str] = DEFAULT_OPS,
    threads: Iterable[int | None] = (1, None),
    shapes: Sequence[KernelShape] | None = None,
    lm_head_ops: Sequence[str] = LM_HEAD_OPS,
    repeat: int = 20,
    budget_s: float = 0.3,
    gemm_n: int | None = None,
    cold: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> Table:
    """Microbenchmark every version of ``ops`` on ``layout``'s shapes (module docstring).

    ``shapes``: override the layout's (a list of :class:`KernelShape`; the last one named
    "lm_head" gets only ``lm_head_ops``). ``threads``: None = the physical cores. ``gemm_n``:
    token rows of the GEMM ops (default: the engine's prefill chunk, ``ENGINE_CHUNK`` = 128 rows,
    the N its GEMMs see in a long prompt). ``cold``: stream a buffer of twice the last-level cache
    through the CPU before every timed call, so the weights come from DRAM as in a decode step
    (otherwise shapes smaller than the cache are timed hot)."""
    from bitnet_lab import kernels
    from bitnet_lab.kernels.native import _k
    from bitnet_lab.bench.machine import _ceiling_isa, llc_bytes, read_buffer

    known = set(DEFAULT_OPS) | {"tq2_gemm", "tq1_gemm", "tq1_x16_gemm"} | set(LM_FLOAT_OPS)
    bad = [o for o in ops if o not in known]
    if bad:
        raise BitnetLabError(f"kernel_bench: unknown op(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    if gemm_n is None:
        gemm_n = _k.ENGINE_CHUNK
    if repeat < 1 or gemm_n < 1:
        raise BitnetLabError(f"kernel_bench: repeat and gemm_n must be >= 1, got {repeat}, {gemm_n}")
    shapes = list(shapes) if shapes is not None else layout_shapes(layout)
    counts = sorted({kernels.effective_threads(t) for t in threads})
    rng = np.random.default_rng(seed)
    plan = []
    for s in shapes:
        for op in (lm_head_ops if s.name == "lm_head" else ops):
            if op in ops or s.name == "lm_head":
                plan += [(s, op, v, isa, t) for v, isa in _versions(op) for t in counts]
    try:
        from tqdm.auto import tqdm

        it = tqdm(plan, desc="kernels", disable=not progress, leave=False)
    except ImportError:  # pragma: no cover
        it = plan
    llc = llc_bytes()
    flush = None
    if cold:
        buf, _ = read_buffer(2 * (llc or 64 << 20))
        read_isa = _ceiling_isa(None)[1]
        flush = lambda: _k.ceiling_read(buf, read_isa, 1)  # evicts the weights from the caches
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    data: _ShapeData | None = None
    done_quant: set[tuple[int, str, int]] = set()
    for s, op, version, isa, t in it:
        if data is None or data.shape is not s:
            data = _ShapeData(s, gemm_n, rng)  # one shape in memory at a time
        if op == "quantize_act":  # depends on K only: once per K
            if (s.K, version, t) in done_quant:
                continue
            done_quant.add((s.K, version, t))
        rec: dict[str, Any] = {"op": op, "shape": s.name if op != "quantize_act" else f"1×{s.K} row",
                               "M": s.M if op != "quantize_act" else 1, "K": s.K,
                               "N": gemm_n if op.endswith("gemm") else 1, "version": version, "isa": isa,
                               "threads": t}
        try:
            call, check, n_ops, n_bytes = _runner(op, data, version, isa, t)
            ok = check(call())
        except (KernelError, BitnetLabError) as e:
            rec.update(verified=False, error=" ".join(str(e).split()))
            records.append(rec)
            continue
        if not ok:
            rec.update(verified=False, error="result differs from the exact numpy product: not timed")
            records.append(rec)
            continue
        ts = _time(call, repeat, budget_s, flush)
        med = statistics.median(ts)
        rec.update(verified=True, calls=len(ts), us=med * 1e6, us_min=min(ts) * 1e6,
                   gop_s=n_ops / med / 1e9, gb_s=n_bytes / med / 1e9)
        records.append(rec)
    if any(s.name == "lm_head" for s in shapes):
        notes.append("lm_head: the engine's lm_head kernels (F16 / F32 rows, Q8_0 and Q6_K with llama.cpp's dots; "
                     "the hidden state quantised outside the timed call, each result checked bit for bit against "
                     "its numpy twin), and the I2_S GEMVs on that shape (a 2-bit lm_head).")
    if any(r["op"].startswith("i2s_x4") for r in records):
        notes.append("i2s_x4: I2_S re-ordered 4 rows per 64-byte step (what the engine runs where the level has a "
                     "native x4 GEMV); other levels' versions copy each group back to row-major first.")
    if any(r["op"].startswith("tq1_x16") for r in records):
        notes.append("tq1_x16: TQ1_0's code bytes re-ordered 16 rows per 4-byte word, block scales dropped (what the "
                     "engine runs where the level has a native x16 GEMV); other versions copy rows back to TQ1_0 first.")
    notes.append(f"every result checked against the exact numpy product before timing; µs = median of up to "
                 f"{repeat} calls (≥ 3, stopping after {budget_s:g} s), Python call overhead included.")
    notes.append("GOP/s: 2 ops per multiply-add; GB/s: packed weights + activations + int32 (lm_head: f32) outputs "
                 "moved once.")
    if cold:
        notes.append(f"cold: a {2 * (llc or 64 << 20) / 2**20:.0f} MiB buffer was read before every timed call "
                     "(weights come from DRAM, as in decode).")
    elif llc:
        notes.append(f"hot cache: shapes whose packed weights fit in the {llc / 2**20:.0f} MiB last-level cache stay "
                     "there between calls, so their GB/s can exceed DRAM bandwidth (cold=True / --kernels-cold "
                     "evicts them before every call).")

    def fig(key: str, fmt: str) -> Callable[[dict], str]:
        return lambda r: (fmt.format(r[key]) if r.get("verified") else ("-" if key != "us" else "FAILED"))

    cols = [Column("op", "op"), Column("shape", "shape"),
            Column("M", "M×K", "r", lambda r: f"{r['M']}×{r['K']}" + (f" ×{r['N']}" if r["N"] > 1 else "")),
            Column("version", "version"), Column("isa", "isa"), Column("threads", "threads", "r"),
            Column("us", "µs/call", "r", fig("us", "{:.1f}")), Column("gop_s", "GOP/s", "r", fig("gop_s", "{:.1f}")),
            Column("gb_s", "GB/s", "r", fig("gb_s", "{:.2f}"))]
    failed = [r for r in records if not r.get("verified")]
    for r in failed:
        notes.append(f"{r['op']} {r['version']} ({r['isa']}, {r['threads']} threads) on {r['shape']}: {r.get('error')}")
    return Table(f"Kernel microbenchmarks ({layout} shapes)" if layout else "Kernel microbenchmarks", cols, records, notes)
