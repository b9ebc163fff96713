"""Locate where two forward passes part: compare their captures op by op, in graph order.

Used by :func:`bitnet_lab.verify.verify` (the model tier, docs/numerics.md#112-the-tiers-bitnet_lab-checks):
the JAX reference and the native engine both return named intermediates from ``forward(..., capture=True)``
(names in the docstring of ``bitnet_lab/reference/model.py``). :func:`locate` walks them in the
order the graph computes them and returns the first op whose values differ:

* integer captures (int8 codes ``.q``, code sums ``.sum``, int32 accumulators ``.acc``) must be
  identical — they are exact in both implementations given identical inputs;
* float captures must agree within ``tolerance`` relative to the capture's own scale
  (``max|Δ| / max|reference|``): the engine may round float reductions differently.

Walking in graph order makes the first hit the cause, not a consequence: everything an op reads
(earlier ops of the same layer, earlier layers, and through the KV cache the same layer of
earlier rows) comes before it in the walk.

The first hit is then classified (:func:`classify`):

* an int8 activation that differs while each side's code is the correct rounding of its own
  ``x·s_x`` and the float inputs agree within tolerance sits on (or within float noise of) a
  rounding boundary ``k + 0.5``: **tie-limited**, not a failure — "exact tie" when ``x·s_x`` is
  exactly ``k + 0.5`` in float32 on one side;
* anything else is a failure naming the layer and the op (and the likely culprit: a code sum
  with identical codes → quantize_act; an accumulator with identical codes → the product kernel
  or the packed weights; a float op whose inputs agree → that op's own arithmetic).

A tie-limited divergence does not end the walk: everything after it may legitimately differ, so
from there on only what can be judged on the native side alone is checked — each quantisation
point and BitLinear against the numpy policy applied to the native side's own inputs
(:func:`native_consistency`). A real fault downstream of a tie is still found and reported.

numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bitnet_lab.quant import ternary
from bitnet_lab.quant.q8_k import quantize_q8_k

# Per-layer captures in the order one layer computes them (reference/layers.py decoder_layer).
LAYER_ORDER: tuple[str, ...] = (
    "attn_norm",
    "attn_in.scale", "attn_in.q", "attn_in.sum",
    "attn_q.acc", "attn_q.out", "attn_k.acc", "attn_k.out", "attn_v.acc", "attn_v.out",
    "q_rope", "k_rope", "attn_out", "attn_sub_norm",
    "attn_output_in.scale", "attn_output_in.q", "attn_output_in.sum",
    "attn_output.acc", "attn_output.out", "attn_resid",
    "ffn_norm",
    "ffn_in.scale", "ffn_in.q", "ffn_in.sum",
    "ffn_gate.acc", "ffn_gate.out", "ffn_up.acc", "ffn_up.out",
    "ffn_act", "ffn_sub_norm",
    "ffn_down_in.scale", "ffn_down_in.q", "ffn_down_in.sum",
    "ffn_down.acc", "ffn_down.out", "ffn_resid",
)
GLOBAL_FIRST: tuple[str, ...] = ("embd",)
GLOBAL_LAST: tuple[str, ...] = ("output_norm", "logits")

# Activation quantisation points and the projections that consume them
# (docs/numerics.md#26-where-the-quantisation-happens).
QUANT_TAG_OF: dict[str, str] = {
    "attn_q": "attn_in", "attn_k": "attn_in", "attn_v": "attn_in",
    "attn_output": "attn_output_in",
    "ffn_gate": "ffn_in", "ffn_up": "ffn_in",
    "ffn_down": "ffn_down_in",
}

QUANT_TAGS = ("attn_in", "attn_output_in", "ffn_in", "ffn_down_in")
TIE_LIMITED = "tie-limited"

# The activation quantisation of the numerics profile (docs/numerics.md#12-numerics-profiles):
# per-token absmax int8 (bitnet) or llama.cpp's Q8_K blocks (whose per-block scales are not
# captured: they are recomputed from the captured float input).
INT8, Q8_K = "int8", "q8_k"

_BLK = re.compile(r"^blk\.(\d+)\.(.+)$")


def quant_inputs(sub_norms: bool) -> dict[str, str]:
    """Capture holding the float input of each quantisation point (llama-arch models without
    sub-norms feed o and down the raw attention output and the gated FFN product)."""
    return {
        "attn_in": "attn_norm",
        "attn_output_in": "attn_sub_norm" if sub_norms else "attn_out",
        "ffn_in": "ffn_norm",
        "ffn_down_in": "ffn_sub_norm" if sub_norms else "ffn_act",
    }


def split_name(name: str) -> tuple[int | None, str]:
    """``"blk.3.ffn_in.q"`` → ``(3, "ffn_in.q")``; global names → ``(None, name)``."""
    m = _BLK.match(name)
    return (int(m.group(1)), m.group(2)) if m else (None, name)


_LAYER_RANK = {op: j for j, op in enumerate(LAYER_ORDER)}


def graph_rank(name: str) -> tuple:
    """Sort key of a capture name in graph order: embedding, layer by layer (ops in
    :data:`LAYER_ORDER`), final norm, logits. Names this module does not know come last in their
    layer (or at the very end), so a capture added later is still compared."""
    layer, op = split_name(name)
    if layer is not None:
        return (1, layer, _LAYER_RANK.get(op, len(LAYER_ORDER)), op)
    if name in GLOBAL_FIRST:
        return (0, 0, GLOBAL_FIRST.index(name), name)
    if name in GLOBAL_LAST:
        return (2, 0, GLOBAL_LAST.index(name), name)
    return (3, 0, 0, name)


def capture_order(names) -> list[str]:
    """``names`` (unique) sorted in graph order (:func:`graph_rank`)."""
    return sorted(set(names), key=graph_rank)


# ---- comparing one capture -------------------------------------------------------------------


@dataclass
class ArrayDiff:
    """How a native capture differs from the reference's (indices into the capture's shape;
    the first axis is the token row)."""

    name: str
    kind: str                       # "int" | "float"
    n_total: int
    n_bad: int                      # int: differing entries; float: entries beyond tolerance
    n_bits: int                     # entries whose bits differ at all
    first: tuple[int, ...] | None   # first bad entry (or first bit difference when n_bad == 0)
    got: Any = None                 # native value there
    want: Any = None                # reference value there
    max_abs: float = 0.0
    rel: float = 0.0                # max|Δ| / max|reference| (floats)

    @property
    def bad(self) -> bool:
        return self.n_bad > 0

    def describe(self) -> str:
        where = f"at {self.first}" if self.first is not None else ""
        if self.kind == "int":
            return f"{self.n_bad} of {self.n_total} entries differ, first {where}: native {self.got}, reference {self.want}"
        return (f"{self.n_bad} of {self.n_total} entries beyond tolerance (max |Δ| {self.max_abs:.3g}, "
                f"{self.rel:.3g} of the capture's scale), first {where}: native {self.got!r}, reference {self.want!r}")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "n_total": self.n_total, "n_bad": self.n_bad,
            "n_bits": self.n_bits, "first": list(self.first) if self.first is not None else None,
            "got": _py(self.got), "want": _py(self.want), "max_abs": self.max_abs, "rel": self.rel,
        }


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _first(mask: np.ndarray) -> tuple[int, ...] | None:
    if not mask.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask.reshape(-1))), mask.shape))


def compare_capture(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> ArrayDiff:
    """Compare one capture: integers exactly; floats within ``tolerance`` of the reference's
    scale ``max|want|`` (non-finite values must match exactly)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return ArrayDiff(name, "shape", int(want.size), int(want.size), int(want.size), None,
                         got=str(got.shape), want=str(want.shape))
    if np.issubdtype(want.dtype, np.integer):
        bad = got != want
        n = int(bad.sum())
        first = _first(bad)
        return ArrayDiff(name, "int", int(want.size), n, n, first,
                         got=_py(got[first]) if first else None, want=_py(want[first]) if first else None)
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    bits = (got.astype(np.float32).view(np.uint32) != want.astype(np.float32).view(np.uint32))
    finite = np.isfinite(g) & np.isfinite(w)
    both_nan = np.isnan(g) & np.isnan(w)
    same_inf = ~finite & (g == w)
    nonfinite_bad = ~finite & ~both_nan & ~same_inf
    scale = float(np.max(np.abs(w[finite]))) if finite.any() else 0.0
    delta = np.where(finite, np.abs(g - w), 0.0)
    max_abs = float(delta.max()) if delta.size else 0.0
    bad = (delta > tolerance * scale) | nonfinite_bad
    n = int(bad.sum())
    first = _first(bad) if n else _first(bits)
    return ArrayDiff(
        name, "float", int(want.size), n, int(bits.sum()), first,
        got=float(got[first]) if first else None, want=float(want[first]) if first else None,
        max_abs=max_abs, rel=max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")),
    )


# ---- locating and classifying ----------------------------------------------------------------


@dataclass
class Located:
    """The first op (in graph order) where the two passes disagree, classified."""

    capture: str                    # full capture name, e.g. "blk.2.ffn_up.acc"
    layer: int | None
    op: str                         # e.g. "ffn_up.acc"
    status: str                     # "tie-limited" | "fail"
    reason: str
    diff: ArrayDiff
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"capture": self.capture, "layer": self.layer, "op": self.op, "status": self.status,
                "reason": self.reason, "diff": self.diff.to_dict(), "details": self.details}


@dataclass
class CaptureComparison:
    """Result of walking all captures: the first disagreement (if any), the first capture whose
    bits differ at all (informational: float noise within tolerance), and how many were compared."""

    located: Located | None
    first_bit_difference: ArrayDiff | None
    n_compared: int
    missing: list[str]

    def to_dict(self) -> dict:
        return {
            "located": self.located.to_dict() if self.located else None,
            "first_bit_difference": self.first_bit_difference.to_dict() if self.first_bit_difference else None,
            "n_compared": self.n_compared, "missing": self.missing,
        }


# (t int8 (M, K) or None when not available, gamma f32, optional out_scale f32, optional per-block
# scales (M, K/256) f32) of blk.{layer}.{proj}
BitLinearParams = Callable[[int, str], tuple[np.ndarray | None, np.float32, np.float32 | None, np.ndarray | None]]


def locate(
    ref_caps: Mapping[str, np.ndarray],
    nat_caps: Mapping[str, np.ndarray],
    *,
    sub_norms: bool,
    rounding: str,
    tolerance: float,
    params: BitLinearParams | None = None,
    act: str = INT8,
) -> CaptureComparison:
    """Walk the reference's captures in graph order against the native ones; see module doc.

    Every reference capture must exist on the native side (a missing one is a failure located
    there). A tie-limited first divergence does not end the walk: everything after it may differ
    as its consequence, so from there on each native BitLinear capture is checked against the
    policy applied to the native side's *own* inputs (:func:`native_consistency`; ``params`` gives
    the weights for the accumulators) — a real fault downstream of a tie is still found, and is
    what this returns, with the tie in ``details["after_tie"]``."""
    missing = sorted(set(ref_caps) - set(nat_caps))
    first_bits: ArrayDiff | None = None
    tie: Located | None = None
    n = 0
    for name in capture_order(ref_caps):
        layer, op = split_name(name)
        if name not in nat_caps:
            d = ArrayDiff(name, "missing", 0, 1, 1, None)
            loc = Located(name, layer, op, "fail", f"the native engine does not capture {name!r}", d)
            return CaptureComparison(_after(loc, tie), first_bits, n, missing)
        if tie is not None:  # past a tie: only the native side's own consistency can be judged
            bad = native_consistency(name, nat_caps, sub_norms=sub_norms, rounding=rounding, params=params, act=act)
            n += int(op.endswith((".scale", ".q", ".sum", ".acc", ".out")))
            if bad is not None:
                return CaptureComparison(_after(bad, tie), first_bits, n, missing)
            continue
        d = compare_capture(name, nat_caps[name], ref_caps[name], tolerance)
        n += 1
        if first_bits is None and d.n_bits:
            first_bits = d
        if d.bad:
            loc = classify(d, ref_caps, nat_caps, layer=layer, op=op, sub_norms=sub_norms, rounding=rounding, act=act)
            if loc.status != TIE_LIMITED:
                return CaptureComparison(loc, first_bits, n, missing)
            tie = loc
    return CaptureComparison(tie, first_bits, n, missing)


def _after(loc: Located, tie: Located | None) -> Located:
    if tie is not None:
        loc.details["after_tie"] = tie.to_dict()
        loc.reason = f"{loc.reason} (found past an earlier tie-limited divergence at {tie.capture})"
    return loc


def native_consistency(
    name: str,
    caps: Mapping[str, np.ndarray],
    *,
    sub_norms: bool,
    rounding: str,
    params: BitLinearParams | None,
    act: str = INT8,
) -> Located | None:
    """Check one native capture against the numpy policy applied to the native side's own inputs
    (exact, whatever happened upstream): a quantisation point's ``.scale`` / ``.q`` / ``.sum`` from
    its own float input, a projection's ``.acc`` from its own codes and the weights (when
    ``params`` provides them), its ``.out`` from its own accumulators and scale (epilogue order
    of docs/numerics.md#32-bitnetcpp-i2_s-epilogue-and-its-order). Other captures (norms, attention,
    residuals) cannot be judged on their own: returns None for them, as for a consistent capture."""
    layer, op = split_name(name)
    if layer is None or "." not in op:
        return None
    stem, kind = op.rsplit(".", 1)
    pre = f"blk.{layer}."
    got = np.asarray(caps[name])
    if stem in QUANT_TAGS:
        x = np.asarray(caps[pre + quant_inputs(sub_norms)[stem]], np.float32).reshape(got.shape[0], -1)
        if act == Q8_K:  # the captured scale is 0 on both sides: the block scales live in the projections
            _, q = quantize_q8_k(x)
            s_x, sum_q = np.zeros(x.shape[0], np.float32), q.astype(np.int32).sum(axis=1)
        else:
            q, s_x, sum_q = ternary.quantize_activations(x, rounding)
        want = {"scale": s_x, "q": q.reshape(got.shape) if kind == "q" else q, "sum": sum_q}.get(kind)
        what = f"its own input {pre}{quant_inputs(sub_norms)[stem]}"
    elif stem in QUANT_TAG_OF and kind in ("acc", "out"):
        tag = QUANT_TAG_OF[stem]
        if kind == "acc":
            t = params(layer, stem)[0] if params is not None else None
            if t is None:
                return None  # weights not provided for this layer: not checked
            codes = np.asarray(caps[pre + tag + ".q"]).reshape(got.shape[0], -1).astype(np.float64)
            # float64 products and sums of |t·q| ≤ 128·K < 2^53 are exact: the integer Σ t·q
            want = (codes @ t.astype(np.float64).T).astype(np.int32)
            what = f"its own codes {pre}{tag}.q and the weights"
        else:
            if params is None:
                return None
            t, gamma, out_scale, d = params(layer, stem)
            if act == Q8_K or d is not None:  # per-block sums: recomputed from the codes and the weights
                if t is None:
                    return None
                from bitnet_lab.quant import mad_reference

                codes = np.asarray(caps[pre + tag + ".q"]).reshape(got.shape[0], -1)
                if act == Q8_K:
                    d8, _ = quantize_q8_k(np.asarray(caps[pre + quant_inputs(sub_norms)[tag]], np.float32)
                                          .reshape(got.shape[0], -1))
                    d_w = d if d is not None else np.full((t.shape[0], t.shape[1] // 256), gamma, np.float32)
                    want = mad_reference.tq_dot_q8k(t, d_w, codes, d8)
                else:
                    acc_b = np.einsum("nbk,mbk->nmb", codes.astype(np.int64).reshape(codes.shape[0], -1, 256),
                                      t.astype(np.int64).reshape(t.shape[0], -1, 256)).astype(np.int32)
                    want = mad_reference.block_epilogue_ref(acc_b, d, np.asarray(caps[pre + tag + ".scale"]))
                what = f"its own codes {pre}{tag}.q, its own input and the weights"
            else:
                want = ternary.bitlinear_epilogue(np.asarray(caps[pre + stem + ".acc"]),
                                                  np.asarray(caps[pre + tag + ".scale"]), gamma)
                what = f"its own accumulators {pre}{stem}.acc and scale {pre}{tag}.scale"
            if out_scale is not None:
                want = want * np.float32(out_scale)
    else:
        return None
    if want is None:
        return None
    if np.issubdtype(got.dtype, np.floating):
        bad = got.astype(np.float32).view(np.uint32) != np.asarray(want, np.float32).reshape(got.shape).view(np.uint32)
    else:
        bad = got != np.asarray(want).reshape(got.shape)
    if not bad.any():
        return None
    first = _first(bad)
    w = np.asarray(want).reshape(got.shape)
    d = ArrayDiff(name, "int" if not np.issubdtype(got.dtype, np.floating) else "float", int(got.size),
                  int(bad.sum()), int(bad.sum()), first, got=_py(got[first]), want=_py(w[first]))
    reason = (f"layer {layer} op {op}: the native value is not the policy applied to {what} "
              f"({int(bad.sum())} of {got.size} entries, first at {first}: native {_py(got[first])}, "
              f"policy {_py(w[first])})")
    return Located(name, layer, op, "fail", reason, d)


def classify(
    d: ArrayDiff,
    ref_caps: Mapping[str, np.ndarray],
    nat_caps: Mapping[str, np.ndarray],
    *,
    layer: int | None,
    op: str,
    sub_norms: bool,
    rounding: str,
    act: str = INT8,
) -> Located:
    """Turn the first disagreement ``d`` into a verdict (module docstring)."""
    where = f"layer {layer} op {op}" if layer is not None else f"op {op}"
    if d.kind == "shape":
        return Located(d.name, layer, op, "fail", f"{where}: shapes differ (native {d.got}, reference {d.want})", d)
    if op.endswith(".q"):
        tag = op[: -len(".q")]
        inp = quant_inputs(sub_norms).get(tag)
        pre = f"blk.{layer}."
        names = (pre + inp, pre + tag + ".scale") if inp else None
        if act == Q8_K and names and all(names[0] in c for c in (ref_caps, nat_caps)):
            return _classify_q8_k_codes(d, layer, op, where, names[0], ref_caps[names[0]], ref_caps[d.name],
                                        nat_caps[names[0]], nat_caps[d.name])
        if names and all(n in ref_caps and n in nat_caps for n in names):
            x_name, s_name = names
            return _classify_codes(d, layer, op, where, x_name, rounding,
                                   ref_caps[x_name], ref_caps[s_name], ref_caps[d.name],
                                   nat_caps[x_name], nat_caps[s_name], nat_caps[d.name])
        return Located(d.name, layer, op, "fail", f"{where}: int8 activations differ ({d.describe()}); "
                       "their float inputs are not captured, so a rounding tie cannot be checked", d)
    if op.endswith(".sum"):
        return Located(d.name, layer, op, "fail",
                       f"{where}: the code sums sum_q differ while the int8 codes agree — quantize_act "
                       f"computes sum_q wrong ({d.describe()})", d)
    if op.endswith(".acc"):
        proj = op[: -len(".acc")]
        tag = QUANT_TAG_OF.get(proj, "?")
        return Located(d.name, layer, op, "fail",
                       f"{where}: int32 accumulators differ while their int8 inputs ({tag}.q) agree — the "
                       f"native product kernel or the packed weights of blk.{layer}.{proj}.weight are wrong "
                       f"({d.describe()})", d)
    if d.kind == "int":
        return Located(d.name, layer, op, "fail", f"{where}: integer values differ ({d.describe()})", d)
    return Located(d.name, layer, op, "fail",
                   f"{where}: differs beyond the tolerance while every earlier op agrees ({d.describe()})", d)


def _classify_codes(d: ArrayDiff, layer, op, where, x_name, rounding,
                    x_r, s_r, q_r, x_n, s_n, q_n) -> Located:
    """int8 codes differ: tie-limited iff each side rounds its own ``x·s_x`` correctly (then a
    rounding boundary ``k + 0.5`` lies between the two products, the inputs having agreed within
    tolerance earlier in the walk)."""
    q_r, q_n = np.asarray(q_r), np.asarray(q_n)
    rows, cols = np.nonzero((q_r != q_n).reshape(q_r.shape[0], -1))
    x_r = np.asarray(x_r, dtype=np.float32).reshape(q_r.shape[0], -1)
    x_n = np.asarray(x_n, dtype=np.float32).reshape(q_n.shape[0], -1)
    s_r = np.asarray(s_r, dtype=np.float32).reshape(-1)
    s_n = np.asarray(s_n, dtype=np.float32).reshape(-1)
    qr = q_r.reshape(q_r.shape[0], -1)[rows, cols]
    qn = q_n.reshape(q_n.shape[0], -1)[rows, cols]
    # x·s_x formed in float32 exactly as the quantiser forms it (docs/numerics.md#21-bitnetcpp-i2_s-path).
    v_r = x_r[rows, cols] * s_r[rows]
    v_n = x_n[rows, cols] * s_n[rows]

    def own(v: np.ndarray) -> np.ndarray:
        return np.clip(ternary.round_int(v, rounding), ternary.ACT_CLAMP_MIN, ternary.ACT_CLAMP_MAX).astype(np.int8)

    wrong_n = own(v_n) != qn
    wrong_r = own(v_r) != qr
    r0, c0 = int(rows[0]), int(cols[0])
    first = {"row": r0, "col": c0, "x_native": float(x_n[r0, c0]), "x_reference": float(x_r[r0, c0]),
             "s_x_native": float(s_n[r0]), "s_x_reference": float(s_r[r0]),
             "xs_native": float(v_n[0]), "xs_reference": float(v_r[0]),
             "q_native": int(qn[0]), "q_reference": int(qr[0])}
    details = {"input": x_name, "n_flipped": int(rows.size), "first": first, "rounding": rounding,
               "flipped": [[int(r), int(c)] for r, c in zip(rows[:16], cols[:16])]}  # (row, col), first 16
    if wrong_n.any() or wrong_r.any():
        side = "native" if wrong_n.any() else "reference"
        i = int(np.argmax(wrong_n if wrong_n.any() else wrong_r))
        v = (v_n if side == "native" else v_r)[i]
        qv = (qn if side == "native" else qr)[i]
        reason = (f"{where}: the {side} int8 code at row {int(rows[i])} col {int(cols[i])} is {int(qv)}, but "
                  f"x·s_x = {float(v)!r} rounds ({rounding}) to {int(own(np.array([v], np.float32))[0])}: "
                  f"the {side} activation quantisation is wrong")
        return Located(d.name, layer, op, "fail", reason, d, details)
    exact = _is_half(v_r) | _is_half(v_n)
    details["n_exact_ties"] = int(exact.sum())
    kind = "an exact rounding tie" if exact[0] else "a near-tie"
    reason = (f"{where}: {rows.size} int8 activation(s) round differently because x·s_x sits on "
              f"{kind} within the float noise of its input {x_name} (first at row {r0} col {c0}: "
              f"x·s_x = {float(v_r[0])!r} reference vs {float(v_n[0])!r} native, q {int(qr[0])} vs "
              f"{int(qn[0])}); {int(exact.sum())} of them exactly k+0.5 in float32")
    return Located(d.name, layer, op, TIE_LIMITED, reason, d, details)


def _classify_q8_k_codes(d: ArrayDiff, layer, op, where, x_name, x_r, q_r, x_n, q_n) -> Located:
    """Q8_K codes differ (the llama.cpp profile): tie-limited iff each side's codes are the Q8_K of
    its own float input (``quant.q8_k``; the inputs having agreed within tolerance earlier in the
    walk, a block's ``iscale·x`` then sits on a rounding boundary, or its max moved)."""
    q_r, q_n = np.asarray(q_r), np.asarray(q_n)
    x_r = np.asarray(x_r, np.float32).reshape(q_r.shape[0], -1)
    x_n = np.asarray(x_n, np.float32).reshape(q_n.shape[0], -1)
    own_r, own_n = quantize_q8_k(x_r)[1], quantize_q8_k(x_n)[1]
    rows, cols = np.nonzero((q_r != q_n).reshape(q_r.shape[0], -1))
    r0, c0 = int(rows[0]), int(cols[0])
    details = {"input": x_name, "n_flipped": int(rows.size), "activations": "Q8_K",
               "first": {"row": r0, "col": c0, "x_native": float(x_n[r0, c0]), "x_reference": float(x_r[r0, c0]),
                         "q_native": int(q_n.reshape(q_n.shape[0], -1)[r0, c0]),
                         "q_reference": int(q_r.reshape(q_r.shape[0], -1)[r0, c0])},
               "flipped": [[int(r), int(c)] for r, c in zip(rows[:16], cols[:16])]}
    for side, got, own in (("native", q_n, own_n), ("reference", q_r, own_r)):
        bad = got.reshape(own.shape) != own
        if bad.any():
            r, c = (int(v[0]) for v in np.nonzero(bad))
            reason = (f"{where}: the {side} Q8_K code at row {r} col {c} is {int(got.reshape(own.shape)[r, c])}, "
                      f"but the Q8_K of its own input gives {int(own[r, c])}: the {side} activation "
                      "quantisation is wrong")
            return Located(d.name, layer, op, "fail", reason, d, details)
    reason = (f"{where}: {rows.size} Q8_K activation(s) differ although each side quantised its own input "
              f"{x_name} correctly and the inputs agree within tolerance (first at row {r0} col {c0}): "
              "a rounding (near-)tie of iscale·x, or a block maximum within float noise")
    return Located(d.name, layer, op, TIE_LIMITED, reason, d, details)


def _is_half(v: np.ndarray) -> np.ndarray:
    """True where float32 ``v`` is exactly k + 0.5 for an integer k."""
    w = np.asarray(v, dtype=np.float64) * 2.0  # exact (a power-of-two scaling)
    return (w == np.floor(w)) & (np.mod(w, 2.0) == 1.0)
