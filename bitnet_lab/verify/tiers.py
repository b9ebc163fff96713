"""The tiers of `bitnet_lab.verify`: each one checks the native engine against the reference."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bitnet_lab import kernels
from bitnet_lab.errors import BitnetLabError, ConfigError, KernelError
from bitnet_lab.quant import ternary
from bitnet_lab.verify.locate import (
    INT8,
    Q8_K,
    QUANT_TAG_OF,
    CaptureComparison,
    graph_rank,
    locate,
    quant_inputs,
)
from bitnet_lab.verify.report import (
    DEFAULT_PROMPT,
    DEFAULT_TOLERANCE,
    FAIL,
    TIE,
    Check,
    Event,
    ExactTier,
    Mismatch,
    ModelTier,
    Step,
    VerifyReport,
)

__all__ = ["DEFAULT_PROMPT", "DEFAULT_TOLERANCE", "VerifyReport", "verify"]

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
MAX_ROWS = 16          # prompt rows fed to T1/T2 (their cost grows with rows, their coverage hardly)
ALL_LAYERS_UP_TO = 4   # models with at most this many layers are checked whole at T1/T2

# The activation quantisation each numerics profile runs (docs/numerics.md#12-numerics-profiles).
ACT_OF_PROFILE = {"bitnet": INT8, "llama.cpp": Q8_K}
# The per-block product ops of the layouts the engine hands out under Q8_K activations.
_BLOCK_FMT = {"i2_s": "i2s", "tq2_0": "tq2", "tq1_0": "tq1"}

_MAD_OPS = {"i2_s": ("i2s_gemv", "i2s_gemm"), "i2_s_x4": ("i2s_x4_gemv", "i2s_x4_gemm"), "tq2_0": ("tq2_gemv", "tq2_gemm"),
            "tq1_0": ("tq1_gemv", "tq1_gemm"), "tq1_0_x16": ("tq1_x16_gemv", "tq1_x16_gemm")}


# =============================================================================================
# The entry point
# =============================================================================================


def verify(
    model_or_path: Any,
    *,
    n: int = 64,
    prompt: str | Sequence[int] | None = None,
    threads: int | None = None,
    isas: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    numerics: str | None = None,
    rounding: str | None = None,
    kv_dtype: str | None = None,
    lm_head_dtype: str | None = None,
    layers: Sequence[int] | None = None,
    native_tensors: Mapping[str, Any] | None = None,
    progress: bool = True,
    tl_tiling: Any = None,
    i2s_layout: str | None = None,
) -> VerifyReport:
    """Run the reference and the native path side by side; return a :class:`VerifyReport`.

    ``model_or_path``: a :class:`bitnet_lab.Model` (any backend: its tensors are used), a path or
    Hub id for :func:`bitnet_lab.load`, or a ``(ModelConfig, tensors)`` pair (``prompt`` must then
    be token ids). ``n``: greedy steps after the prompt (0: the prompt only). ``prompt``: text
    (tokenised with the model's tokenizer, its default BOS) or token ids; default
    :data:`DEFAULT_PROMPT`. ``threads``: N of the "1 and N threads" checks and of the model tier
    (default :func:`bitnet_lab.kernels.effective_threads`). ``isas``: ISA levels to check (default
    every available one; the model tier runs on the best of them). ``tolerance``: the model tier's
    bound on ``max|Δlogit| / max|logit|``, also the relative bound for float captures when
    locating. ``numerics`` (the profile, docs/numerics.md#12-numerics-profiles) / ``rounding`` /
    ``kv_dtype`` / ``lm_head_dtype``: the numerics both backends use (None: the profile's default).
    ``tl_tiling``: for a path, :func:`bitnet_lab.load`'s option of that name. ``i2s_layout``: the
    native engine's option of that name — which layouts it holds the projections in, so which
    kernels are checked (None: a Model's own load option, else "auto").
    ``layers``: the layers T1/T2 check (default: module docstring). ``native_tensors``: the
    tensors the native engine is built from (default: the model's own) — a modified copy shows
    how verify localises a difference. ``progress``: tqdm bars on stderr.

    Raises the project's errors for bad arguments (unknown ISA, rounding, …) and for a model the
    native engine cannot run; a disagreement is never raised, it is reported.
    """
    n = _nonneg_int(n, "n")
    tolerance = float(tolerance)
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ConfigError(f"verify: tolerance must be a positive number, got {tolerance!r}")
    if rounding is not None and rounding not in ternary.ROUNDING_MODES:
        raise ConfigError(f"verify: rounding {rounding!r} is not one of {ternary.ROUNDING_MODES}")
    from bitnet_lab.backend import numerics_options

    opts = numerics_options(numerics, rounding=rounding, kv_dtype=kv_dtype, lm_head_dtype=lm_head_dtype)
    if i2s_layout is None:
        i2s_layout = getattr(model_or_path, "backend_options", {}).get("i2s_layout", "auto")
    isas = _check_isas(isas)
    n_threads = kernels.effective_threads(threads)
    thread_set = sorted({1, n_threads})

    config, tensors, name, tokenizer_of, closer = _open(model_or_path, tl_tiling)
    try:
        ids = _prompt_ids(prompt, tokenizer_of)
        if len(ids) + n > config.context:
            raise ConfigError(f"verify: prompt ({len(ids)} tokens) + n ({n}) exceeds the model's context {config.context}")
        sample = _sample_layers(config.n_layers, layers)
        return _run(config, tensors, native_tensors if native_tensors is not None else tensors, name, ids, n,
                    tolerance, opts, isas, n_threads, thread_set, sample,
                    DEFAULT_PROMPT if prompt is None else prompt if isinstance(prompt, str) else None, progress,
                    i2s_layout)
    finally:
        if closer is not None:
            closer()


def _run(config, tensors, nat_tensors, name, ids, n, tolerance, opts, isas, n_threads, thread_set, sample,
         prompt_text, progress, i2s_layout) -> VerifyReport:
    from bitnet_lab.engine.native import NativeEngine
    from bitnet_lab.reference import ReferenceModel

    n_ctx = max(64, -(-(len(ids) + n) // 64) * 64)  # a multiple of 64: compiled steps are reused
    rounding = opts["rounding"]
    act = ACT_OF_PROFILE[opts["numerics"]]
    ref = ReferenceModel(config, tensors, n_ctx_max=n_ctx, **opts)
    engines = {th: NativeEngine(config, nat_tensors, threads=th, i2s_layout=i2s_layout, **opts) for th in thread_set}
    nat = engines[n_threads]
    model_isa = isas[-1]  # the best requested level (ISA_ORDER puts the best last)

    # The prompt through both, with captures: the model tier's first comparison, and the real
    # activations T1 and T2 feed to the kernels.
    t0 = time.perf_counter()
    cache_r, cache_n = ref.new_cache(n_ctx), nat.new_cache(n_ctx)
    lr, cr = ref.forward(ids, cache_r, capture=True)
    with kernels.use_isa(model_isa):
        ln, cn = nat.forward(ids, cache_n, capture=True)
    t_prefill = time.perf_counter() - t0

    t0 = time.perf_counter()
    kernel = kernel_tier(nat, nat_tensors, config, cr, sample, rounding, isas, thread_set, progress, act=act)
    kernel.seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    bitlinear = bitlinear_tier(engines, tensors, config, cr, sample, rounding, isas, progress, act=act)
    bitlinear.seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    with kernels.use_isa(model_isa):
        model = model_tier(ref, nat, config, ids, n, n_ctx, tolerance, rounding, (lr, cr, ln, cn),
                           (cache_r, cache_n), progress, params=bitlinear_params(config, tensors, sample), act=act)
    model.seconds = time.perf_counter() - t0 + t_prefill
    model.isa, model.threads = model_isa, n_threads

    for tier in (kernel, bitlinear):
        tier.tensors = [f"blk.{i}.{p}.weight" for i in sample for p in PROJECTIONS]
        every = len(sample) == config.n_layers
        tier.notes.insert(0, f"tensors: {len(tier.tensors)} of {7 * config.n_layers} ternary "
                          + ("(all)" if every else f"(layers {', '.join(map(str, sample))}; pass layers= for others)")
                          + f"; activation rows: the prompt's first {min(len(ids), MAX_ROWS)} + synthetic")
    settings = {
        "n": n, "prompt": prompt_text, "prompt_ids": [int(i) for i in ids], "prompt_tokens": len(ids),
        "tolerance": tolerance, "threads": thread_set, "isas": list(isas), "layers": sample,
        "n_ctx": n_ctx,
    }
    return VerifyReport(
        model=name, settings=settings, numerics=_numerics(ref.numerics, nat.numerics),
        kernel=kernel, bitlinear=bitlinear, model_tier=model, environment=_environment(),
    )


# =============================================================================================
# Arguments
# =============================================================================================


def _nonneg_int(v: Any, what: str) -> int:
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"verify: {what} must be an integer >= 0, got {v!r}") from None
    if i != v or i < 0:
        raise ConfigError(f"verify: {what} must be an integer >= 0, got {v!r}")
    return i


def _check_isas(isas: Sequence[str] | None) -> tuple[str, ...]:
    avail = kernels.available_isas()
    if isas is None:
        return avail
    if isinstance(isas, str):
        isas = [s for s in isas.replace(",", " ").split() if s]
    chosen = list(dict.fromkeys(isas))
    bad = [i for i in chosen if i not in avail]
    if bad or not chosen:
        raise KernelError(f"verify: ISA level(s) {', '.join(map(repr, bad)) or '(none)'} not available; "
                          f"available here: {', '.join(avail)}")
    return tuple(i for i in kernels.ISA_ORDER if i in chosen)  # best last


def _open(src: Any, tl_tiling: Any = None):
    """``(config, tensors, display name, tokenizer getter, closer)`` of what the caller passed."""
    from bitnet_lab.config import ModelConfig
    from bitnet_lab.model import Model, load

    if isinstance(src, Model):
        return src.config, src.tensors, src.source.name, lambda: src.tokenizer, None
    if isinstance(src, tuple) and len(src) == 2 and isinstance(src[0], ModelConfig):
        return src[0], src[1], f"in-memory {src[0].arch} model", None, None
    if isinstance(src, (str, os.PathLike)):
        m = load(src, tl_tiling=tl_tiling)
        return m.config, m.tensors, m.source.name, lambda: m.tokenizer, m.close
    raise ConfigError(f"verify: expected a Model, a path or a (ModelConfig, tensors) pair, got {type(src).__name__}")


def _prompt_ids(prompt: Any, tokenizer_of) -> list[int]:
    if prompt is None or isinstance(prompt, str):
        text = DEFAULT_PROMPT if prompt is None else prompt
        if tokenizer_of is None:
            raise ConfigError("verify: a (ModelConfig, tensors) model has no tokenizer; pass prompt as token ids")
        ids = tokenizer_of().encode(text)
    else:
        ids = [int(i) for i in prompt]
    if not ids:
        raise ConfigError("verify: the prompt is empty (no tokens)")
    return ids


def _sample_layers(n_layers: int, layers: Sequence[int] | None) -> list[int]:
    if layers is not None:
        chosen = sorted({int(i) for i in layers})
        bad = [i for i in chosen if not 0 <= i < n_layers]
        if bad or not chosen:
            raise ConfigError(f"verify: layers {bad or '(none)'} outside 0..{n_layers - 1}")
        return chosen
    if n_layers <= ALL_LAYERS_UP_TO:
        return list(range(n_layers))
    return sorted({0, n_layers // 3, (2 * n_layers) // 3, n_layers - 1})


def _numerics(ref: Mapping[str, Any], nat: Mapping[str, Any]) -> dict:
    """The settings both backends report; a key where they differ shows both values."""
    out = {}
    for k in dict.fromkeys([*ref, *nat]):
        a, b = ref.get(k), nat.get(k)
        out[k] = a if a == b else f"reference: {a} | native: {b}"
    return out


def _environment() -> dict:
    from bitnet_lab._version import __version__

    return {
        "bitnet_lab": __version__, "available_isas": list(kernels.available_isas()),
        "active_isa": kernels.active_isa(), "openmp": kernels.openmp_enabled(),
        "physical_cores": kernels.physical_cores(), "fault": kernels.fault_status(),
    }


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# =============================================================================================
# Exact comparisons
# =============================================================================================


def _show(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        f = np.float32(v)
        return f"{float(f)!r} (0x{int(f.view(np.uint32)):08x})"
    return v.item() if isinstance(v, np.generic) else v


def _exact(subject: str, what: str, got: Any, want: Any, *, row: int | None = None) -> tuple[int, Mismatch | None]:
    """Compare bit for bit. Shapes: (N, M) → (row, col); (M,) with ``row`` → that row; (N,)
    without (per-row scales and sums) → (row, -1). Returns (elements compared, first mismatch)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return int(want.size), Mismatch(subject, f"{what} shape", int(want.size), int(want.size), -1, -1,
                                        str(got.shape), str(want.shape))
    if np.issubdtype(want.dtype, np.floating):
        g, w = got.astype(np.float32).view(np.uint32), want.astype(np.float32).view(np.uint32)
    else:
        g, w = got, want
    bad = g != w
    n_bad = int(np.count_nonzero(bad))
    if not n_bad:
        return int(want.size), None
    flat = int(np.argmax(bad.reshape(-1)))
    idx = np.unravel_index(flat, bad.shape)
    if bad.ndim == 2:
        r, c = int(idx[0]), int(idx[1])
    elif row is not None:
        r, c = row, int(idx[0])
    else:
        r, c = int(idx[0]), -1
    return int(want.size), Mismatch(subject, what, n_bad, int(want.size), r, c,
                                    _show(got.reshape(-1)[flat]), _show(want.reshape(-1)[flat]))


def synthetic_rows(K: int) -> np.ndarray:
    """Three float32 rows (3, K) no real activation is guaranteed to contain: all zero (the
    absmax floor, docs/numerics.md#21-bitnetcpp-i2_s-path), absmax exactly 127 with every other element k +
    0.5 (s_x = 1, so each is an exact rounding tie: the rounding mode decides it), and the same scaled by 1e-8
    (absmax below the 1e-5 floor)."""
    ties = ((np.arange(K) % 254) - 126).astype(np.float32) + np.float32(0.5)  # -125.5 .. 127.5
    ties = np.minimum(ties, np.float32(126.5))
    ties[0] = np.float32(127.0)  # absmax 127 → s_x = fl32(127/127) = 1 exactly
    return np.stack([np.zeros(K, np.float32), ties, ties * np.float32(1e-8)])


def adversarial_codes(K: int) -> np.ndarray:
    """Two int8 rows (2, K): all +127 and all −128 — with codes c ∈ {0, 1, 2} they give the largest
    positive and negative Σ c·q a weight row can reach
    (docs/kernels.md#23-the-int16-overflow-bound-and-a-safer-widening-rule: 32 blocks of such rows overflow an
    int16 accumulator that is widened too rarely)."""
    return np.stack([np.full(K, 127, np.int8), np.full(K, -128, np.int8)])


# =============================================================================================
# T1: kernels vs numpy twins
# =============================================================================================


def _mad_versions(op: str, isas: Sequence[str]) -> list[tuple[str, str]]:
    """(version, isa) of every compiled version of a MAD op on the requested levels, then the
    version a requested level runs by default where that is a lower level's (amx decodes with
    avx512vnni's GEMVs), under the level that runs it: every kernel the engine can call there."""
    out = [(v, isa) for v, isa, _ in kernels.kernel_versions()[op] if isa in isas]
    for isa in isas:
        default = kernels.default_version(op, isa)
        if all(v != default for v, _ in out):
            out.append((default, isa))
    return out


def _lut_versions(op: str, isas: Sequence[str]) -> list[tuple[str, str]]:
    """(version the level's dispatch runs, isa) of a LUT op on each requested level."""
    out = []
    for isa in isas:
        names = [v["version"] for v in kernels.lut_kernel_versions() if v["op"] == op and isa in v["default_for"]]
        out.append((names[0] if names else "?", isa))
    return out


def kernel_tier(engine, tensors, config, ref_caps, layers, rounding, isas, thread_set, progress,
                act: str = INT8) -> ExactTier:
    """T1 (module docstring). ``engine``'s packed bytes are what the kernels read; ``tensors`` (the
    engine's inputs) give the TL tilings. ``act``: the engine's activations — with Q8_K (the
    llama.cpp profile) the Q8_K quantiser and the per-block products are checked too, as those
    are what the engine then runs."""
    from bitnet_lab.quant import lut, tiling

    tier = ExactTier("T1 kernel", "every native kernel bit-identical to its numpy twin "
                     "(int8 codes, scales, code sums, LUTs, int32 accumulators)")
    checks: dict[tuple, Check] = {}

    def check(op: str, version: str, isa: str, threads: int) -> Check:
        key = (op, version, isa, threads)
        if key not in checks:
            checks[key] = Check(op, version, isa, threads)
        return checks[key]

    inputs = quant_inputs(config.sub_norms)
    shapes = config.projection_shapes()
    bar = _progress(len(layers), "T1 kernels", progress)
    for i in layers:
        # -- activation quantisation on the real inputs of the layer's four quantisation points
        for tag, src in inputs.items():
            real = np.asarray(ref_caps[f"blk.{i}.{src}"], np.float32)[:MAX_ROWS]
            x = np.ascontiguousarray(np.concatenate([real, synthetic_rows(real.shape[1])]))
            want = ternary.quantize_activations(x, rounding)
            subject = f"blk.{i}.{src} ({tag})"
            for version, isa in _mad_versions("quantize_act", isas):
                for th in thread_set:
                    got = kernels.quantize_act(x, rounding, threads=th, version=version)
                    c = check("quantize_act", version, isa, th)
                    for k, (what, g, w) in enumerate(zip(("q", "s_x", "sum_q"), got, want)):
                        c.add(*_exact(subject, what, g, w), count_subject=k == 0)
            if act == Q8_K:  # one scalar C quantiser on every level (kernels.q8k): checked once
                from bitnet_lab.kernels import q8k as native_q8k
                from bitnet_lab.quant import q8_k

                got, want = native_q8k.quantize_q8_k(x), q8_k.quantize_q8_k(x)
                c = check("quantize_q8_k", "v0", "scalar", 0)
                c.add(*_exact(subject, "d8", got[0], want[0]))
                c.add(*_exact(subject, "q", got[1], want[1]), count_subject=False)
        # -- the products, on the bytes the engine reads
        for p in PROJECTIONS:
            name = f"blk.{i}.{p}.weight"
            M, K = shapes[p]
            layout, data = engine.packed_weight(name)
            codes = np.asarray(ref_caps[f"blk.{i}.{QUANT_TAG_OF[p]}.q"], np.int8)[:MAX_ROWS]
            Q = np.ascontiguousarray(np.concatenate([codes, adversarial_codes(K)]))
            if act == Q8_K and layout in _BLOCK_FMT:
                _check_blocks(check, name, _BLOCK_FMT[layout], data, Q, M, K, isas, thread_set)
            elif layout in _MAD_OPS:
                _check_mad(check, name, layout, data, Q, M, K, isas, thread_set)
            elif layout in ("tl1", "tl2"):
                tl = tiling.validate_tiling(layout, M, K, tensors[name].tiling)
                _check_lut(check, lut, name, layout, data, Q, M, K, tl, isas, thread_set)
            else:  # pragma: no cover - the engine only hands out these layouts
                raise BitnetLabError(f"verify: {name}: no kernel check for layout {layout!r}")
        bar.update(1)
    bar.close()
    tier.checks = list(checks.values())
    tier.notes.append(f"activation quantisation: {rounding} rounding; products: codes of the prompt + rows of "
                      "all +127 and all -128; every MAD version of each level, the LUT kernels each level runs")
    return tier


def _check_blocks(check, name, fmt, data, Q, M, K, isas, thread_set) -> None:
    """The per-256-block products (GEMV per row and GEMM) against their twins."""
    from bitnet_lab.quant import mad_reference

    want = getattr(mad_reference, f"{fmt}_block_gemm_ref")(data, Q, M, K)  # (N, M, K/256)
    for gemv in (True, False):
        op = kernels.BLOCK_OPS[fmt][0 if gemv else 1]
        for version, isa in _mad_versions(op, isas):
            for th in thread_set:
                got = kernels.block_gemm(fmt, data, Q, M, K, gemv=gemv, threads=th, version=version)
                check(op, version, isa, th).add(*_exact(name, "acc", got, want))


def _check_mad(check, name, layout, data, Q, M, K, isas, thread_set) -> None:
    from bitnet_lab.quant import mad_reference

    K_pad = int(data.size) * 4 // M if layout == "i2_s" else K  # load-time repacks pad K to 128
    if K_pad != K:
        Q = np.ascontiguousarray(np.concatenate([Q, np.zeros((Q.shape[0], K_pad - K), np.int8)], axis=1))
    gemv_op, gemm_op = _MAD_OPS[layout]
    twin = getattr(mad_reference, f"{gemm_op}_ref")
    want = twin(data, Q, M, K_pad)  # (N, M) int32: the twin of both the GEMV and the GEMM
    gemv, gemm = getattr(kernels, gemv_op), getattr(kernels, gemm_op)
    for version, isa in _mad_versions(gemv_op, isas):
        for th in thread_set:
            c = check(gemv_op, version, isa, th)
            for r in range(Q.shape[0]):
                got = gemv(data, np.ascontiguousarray(Q[r]), M, K_pad, threads=th, version=version)
                c.add(*_exact(name, "acc", got, want[r], row=r), count_subject=r == 0)
    for version, isa in _mad_versions(gemm_op, isas):
        for th in thread_set:
            got = gemm(data, Q, M, K_pad, threads=th, version=version)
            check(gemm_op, version, isa, th).add(*_exact(name, "acc", got, want))


def _check_lut(check, lut, name, layout, data, Q, M, K, tl, isas, thread_set) -> None:
    if layout == "tl1":
        tables = [lut.build_tl1_lut(q) for q in Q]
        want = np.stack([lut.tl1_gemv_ref(data, t, M, K, tl) for t in tables])
        planes = [lut.lut_byte_planes(t) for t in tables]
        build = lambda q, isa: kernels.tl1_build_lut(q, isa=isa)  # noqa: E731
    else:
        tables = [lut.build_tl2_lut(q, K, tl) for q in Q]
        want = np.stack([lut.tl2_gemv_ref(data, t, M, K, tl) for t in tables])
        planes = [lut.lut_byte_planes(t) for t in tables]
        build = lambda q, isa: kernels.tl2_build_lut(q, K, tl, isa=isa)  # noqa: E731
    gemv = kernels.tl1_gemv if layout == "tl1" else kernels.tl2_gemv
    for version, isa in _lut_versions(f"{layout}_build_lut", isas):
        c = check(f"{layout}_build_lut", version, isa, 0)
        for r, q in enumerate(Q):
            got = build(np.ascontiguousarray(q), isa)
            n_cmp, mm = _exact(name, "lut", got.reshape(-1), planes[r].reshape(-1), row=r)
            c.add(n_cmp, mm, count_subject=r == 0)
    for version, isa in _lut_versions(f"{layout}_gemv", isas):
        for th in thread_set:
            got = gemv(data, Q, M, K, tl, threads=th, isa=isa, name=name)
            check(f"{layout}_gemv", version, isa, th).add(*_exact(name, "acc", got, want))
    if K % 64:  # the prefill GEMM's contract; the engine prefills such a tensor through the GEMV
        return
    gemm = kernels.tl1_gemm if layout == "tl1" else kernels.tl2_gemm
    for version, isa in _lut_versions(f"{layout}_gemm", isas):
        if not kernels.has_tl_gemm(isa):
            continue  # only the amx level has it; the others prefill through the GEMV checked above
        for th in thread_set:
            got = gemm(data, Q, M, K, tl, threads=th, isa=isa, name=name)
            check(f"{layout}_gemm", version, isa, th).add(*_exact(name, "acc", got, want))


# =============================================================================================
# T2: BitLinear vs the numpy policy
# =============================================================================================


def numpy_bitlinear(x: np.ndarray, t: np.ndarray, gamma: np.float32, rounding: str,
                    out_scale: np.float32 | None = None, *, d: np.ndarray | None = None,
                    act: str = INT8) -> tuple[np.ndarray, np.ndarray]:
    """The BitLinear policy in numpy: ``(y f32 (N, M), acc int32 (N, M))`` — quantise each row,
    exact integer product (int64, then int32: exact, docs/numerics.md#31-the-integer-identity), epilogue
    ``(acc / s_x) · γ`` in that order, then the optional per-tensor ``.scale`` (old ``bitnet`` arch) as one
    f32 multiply. ``d`` (M, K/256): per-block TQ scales (docs/numerics.md#35-block-scaled-tq-epilogue).
    ``act=Q8_K`` (the llama.cpp profile): Q8_K activations and ggml's per-block dot
    (docs/numerics.md#36-llamacpp-tq-dot-with-q8_k-activations; γ in every block of a per-tensor
    weight); ``acc`` is then the total over blocks."""
    from bitnet_lab.quant import mad_reference

    if act == Q8_K:
        from bitnet_lab.quant.q8_k import quantize_q8_k

        d8, q = quantize_q8_k(np.ascontiguousarray(x, np.float32))
        d_w = d if d is not None else np.full((t.shape[0], t.shape[1] // 256), gamma, np.float32)
        y = mad_reference.tq_dot_q8k(t, d_w, q, d8)
        acc = (q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)
    else:
        q, s_x, _ = ternary.quantize_activations(x, rounding)
        acc = (q.astype(np.int64) @ t.astype(np.int64).T).astype(np.int32)
        if d is not None:
            acc_b = np.einsum("nbk,mbk->nmb", q.astype(np.int64).reshape(q.shape[0], -1, 256),
                              t.astype(np.int64).reshape(t.shape[0], -1, 256)).astype(np.int32)
            y = mad_reference.block_epilogue_ref(acc_b, d, s_x)
        else:
            y = ternary.bitlinear_epilogue(acc, s_x, gamma)
    if out_scale is not None:
        y = y * np.float32(out_scale)
    return y, acc


def bitlinear_params(config, tensors: Mapping[str, Any], layers: Sequence[int]):
    """``params(layer, proj) -> (t int8 (M, K) | None, γ, out_scale | None, block scales (M, K/256) | None)``
    from the reference's view of the weights, decoded on first use and cached. ``t`` only for ``layers`` (the sampled
    ones: bounds memory and time on big models); γ and the ``.scale`` for every layer."""
    from bitnet_lab.reference.weights import decode_projection

    shapes = config.projection_shapes()
    keep = set(layers)
    cache: dict[tuple[int, str], tuple] = {}

    def params(layer: int, proj: str) -> tuple:
        key = (layer, proj)
        if key not in cache:
            base = f"blk.{layer}.{proj}"
            parts = decode_projection(f"{base}.weight", tensors[f"{base}.weight"], shapes[proj])
            gamma = parts.gamma if parts.gamma is not None else np.float32(np.nan)
            cache[key] = (parts.t if layer in keep else None, gamma, _out_scale(tensors, base), parts.d)
        return cache[key]

    return params


def _out_scale(tensors: Mapping[str, Any], base: str) -> np.float32 | None:
    from bitnet_lab.tensors import FloatTensor

    t = tensors.get(f"{base}.scale")
    if t is None:
        return None
    if not isinstance(t, FloatTensor) or t.to_numpy().size != 1:
        raise ConfigError(f"{base}.scale: expected one float, got {getattr(t, 'shape', None)}")
    return np.float32(t.to_numpy().reshape(-1)[0])


def bitlinear_tier(engines, tensors, config, ref_caps, layers, rounding, isas, progress,
                   act: str = INT8) -> ExactTier:
    """T2 (module docstring). ``engines``: {threads: NativeEngine}; ``tensors``: the model's (the
    reference's view of the weights). ``act``: the profile's activations (:func:`numpy_bitlinear`)."""
    from bitnet_lab.reference.weights import decode_projection

    policy = ("Q8_K → exact per-block products → ggml's per-block float sum" if act == Q8_K else
              "quantise → exact integer product → (acc / s_x)·γ")
    tier = ExactTier("T2 BitLinear", f"NativeEngine.bitlinear bit-identical to the numpy policy ({policy}) "
                     "on the same f32 rows")
    judge = Check("policy vs JAX captures", "-", "reference", 0)
    native = {(isa, th): Check("bitlinear", "engine", isa, th) for isa in isas for th in engines}
    inputs = quant_inputs(config.sub_norms)
    shapes = config.projection_shapes()
    bar = _progress(len(layers), "T2 BitLinear", progress)
    for i in layers:
        for p in PROJECTIONS:
            base = f"blk.{i}.{p}"
            parts = decode_projection(f"{base}.weight", tensors[f"{base}.weight"], shapes[p])
            real = np.asarray(ref_caps[f"blk.{i}.{inputs[QUANT_TAG_OF[p]]}"], np.float32)[:MAX_ROWS]
            R = real.shape[0]
            x = np.ascontiguousarray(np.concatenate([real, synthetic_rows(real.shape[1])]))
            want_y, want_acc = numpy_bitlinear(x, parts.t, parts.gamma, rounding, _out_scale(tensors, base),
                                               d=parts.d, act=act)
            # the judge itself: the JAX reference's BitLinear equals the policy on the prompt rows
            judge.add(*_exact(f"{base}.weight", "acc", np.asarray(ref_caps[f"{base}.acc"])[:R], want_acc[:R]))
            judge.add(*_exact(f"{base}.weight", "y", np.asarray(ref_caps[f"{base}.out"])[:R], want_y[:R]),
                      count_subject=False)
            for th, eng in engines.items():
                for isa in isas:
                    with kernels.use_isa(isa):
                        y, acc = eng.bitlinear(base, x, return_acc=True)
                    c = native[(isa, th)]
                    c.add(*_exact(f"{base}.weight", "acc", acc, want_acc))
                    c.add(*_exact(f"{base}.weight", "y", y, want_y), count_subject=False)
        bar.update(1)
    bar.close()
    tier.checks = [*native.values(), judge]
    how = "Q8_K activations, ggml's per-block dot" if act == Q8_K else f"{rounding} rounding"
    tier.notes.append(f"{how}; inputs: the f32 rows each projection reads in the reference "
                      "(its norm outputs) + 3 synthetic rows (zero, exact ties, below the 1e-5 floor)")
    return tier


# =============================================================================================
# T3: the model
# =============================================================================================


def _rel_err(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max|Δ| / max|want|, max|Δ|) in float64; non-finite values count as infinitely wrong."""
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not (np.isfinite(g).all() and np.isfinite(w).all()):
        same = np.array_equal(g, w, equal_nan=True)
        return (0.0, 0.0) if same else (math.inf, math.inf)
    d = float(np.max(np.abs(g - w))) if g.size else 0.0
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    return (d / scale if scale > 0 else (0.0 if d == 0 else math.inf)), d


def _margin(logits: np.ndarray) -> float:
    """Top-1 minus top-2 logit."""
    if logits.size < 2:
        return math.inf
    top2 = np.partition(logits.astype(np.float64), -2)[-2:]
    return float(top2[1] - top2[0])


def model_tier(ref, nat, config, ids, n, n_ctx, tolerance, rounding, prefill, caches, progress,
               params=None, act: str = INT8) -> ModelTier:
    """T3 (module docstring). ``prefill``: (reference logits, captures, native logits, captures)
    of the prompt; ``caches``: the two caches holding it; ``params``: the reference's BitLinear
    weights for the locator's checks past a tie (:func:`bitlinear_params`).

    Every forward (the prompt, then one per decode token) runs with captures on both backends,
    and they are compared at once, so the rows are walked in time order and each row in graph
    order: the first disagreement found is the cause. A row that disagrees at or after the graph
    position of a cause already found (in an earlier row, hence in the KV cache it reads) is that
    cause's consequence and inherits its verdict; one that disagrees earlier in the graph is a new,
    independent event."""
    lr, cr, ln, cn = prefill
    cache_r, cache_n = caches
    tier = ModelTier("T3 model", f"logits within {tolerance:g} of max|logit| and greedy tokens identical for "
                     f"{n} steps (teacher-forced), first divergence located by layer and op",
                     tolerance=tolerance, prompt_tokens=len(ids))
    causes: list[tuple[tuple, int]] = []  # (graph rank of the located op, event index)

    def compare(where: str, ref_caps, nat_caps) -> tuple[CaptureComparison, int | None]:
        """Compare one forward's captures; returns them and the index of the event that explains
        a disagreement (a new one, or the earlier cause it is a consequence of)."""
        cc = locate(ref_caps, nat_caps, sub_norms=config.sub_norms, rounding=rounding,
                    tolerance=tolerance, params=params, act=act)
        loc = cc.located
        if loc is None:
            return cc, None
        rank = graph_rank(loc.capture)
        # Integers that differ from equal inputs (or from the native side's own inputs) cannot
        # come from the cache: never a consequence, only a repeat of the same fault.
        independent = loc.status == FAIL and (loc.diff.kind != "float" or "after_tie" in loc.details)
        for cause_rank, idx in causes:
            cause = tier.events[idx].located
            same = (cause.layer, cause.op, tier.events[idx].status) == (loc.layer, loc.op, loc.status)
            if same or (not independent and cause_rank <= rank):
                tier.events[idx].affects.append(where)
                return cc, idx
        tier.events.append(Event(where, loc.status, loc.reason, loc, cc))
        causes.append((rank, len(tier.events) - 1))
        causes.sort()
        return cc, len(tier.events) - 1

    # -- the prompt: every row's logits and every capture
    tier.prefill_rel_err, _ = _rel_err(ln, lr)
    cc, event = compare("prefill", cr, cn)
    tier.capture_checks["prefill"] = cc
    if event is None and tier.prefill_rel_err > tolerance:  # the logits are a capture: cannot happen
        tier.events.append(Event("prefill", FAIL, f"prompt logits differ by {tier.prefill_rel_err:.3g} of "
                                 "max|logit| but no capture does", None, cc))

    # -- greedy steps, teacher-forced with the reference's tokens
    row_r, row_n = lr[-1], ln[-1]
    pos = len(ids)
    bar = _progress(n, "T3 model", progress)
    for k in range(n):
        rel, max_abs = _rel_err(row_n, row_r)
        tok_r, tok_n = int(np.argmax(row_r)), int(np.argmax(row_n))
        step = Step(k, pos, tok_r, tok_n, rel, max_abs, _margin(row_r))
        tier.steps.append(step)
        if tok_r != tok_n or rel > tolerance:
            if event is not None:  # explained by what the captures of this forward located
                step.status, step.event = tier.events[event].status, event
            else:
                near = tok_r != tok_n and rel <= tolerance
                step.status = TIE if near else FAIL
                why = NEAR_TIE if near else "yet no capture of this forward differs beyond tolerance"
                tier.events.append(Event(f"step {k}", step.status, f"{_step_head(step, tolerance)} — {why}", None, None))
                step.event = len(tier.events) - 1
        bar.update(1)
        if k == n - 1:
            break
        out_r, caps_r = ref.forward([tok_r], cache_r, capture=True)
        out_n, caps_n = nat.forward([tok_r], cache_n, capture=True)
        cc, event = compare(f"decode step {k + 1}", caps_r, caps_n)
        if k == 0:
            tier.capture_checks["decode step 1"] = cc
        row_r, row_n = out_r[-1], out_n[-1]
        pos += 1
    bar.close()
    tier.notes.append("captures compared for the prompt and for every decode step" if n > 1 else
                      "captures compared for the prompt" + (" (n = 0: the prompt only)" if n == 0 else ""))
    return tier


NEAR_TIE = ("the logits agree within tolerance, so the reference's top-2 margin is below what the float noise can "
            "swap: a near-tie of the logits")


def _step_head(step: Step, tolerance: float) -> str:
    what = []
    if step.native_token != step.token:
        what.append(f"native picks token {step.native_token}, reference {step.token} (margin {step.margin:.4g})")
    if step.rel_err > tolerance:
        what.append(f"max|Δlogit|/max|logit| {step.rel_err:.3g} > {tolerance:g}")
    return "; ".join(what)
