"""A deliberately plain numpy implementation of the BitNet forward pass, for tests only.

It implements the same math as ``bitnet_lab.reference`` (docs/numerics.md plus the precision recipe of
``bitnet_lab/reference/layers.py``) but shares no code with it: one token at a time, explicit loops
over layers and heads, Python lists as the KV cache. Only the activation quantisation policy and
the per-tensor epilogue come from ``bitnet_lab.quant.ternary`` (the numerics policy itself).

Float recipe, restated: RMSNorm squares in f32 summed in float64, ``1/sqrtf(mean + eps)`` in f32,
then two f32 multiplies; RoPE angles by repeated f32 multiplication, cos/sin via float64; rotation
in f32 with each product rounded; attention dots, the softmax sum and the lm_head dot accumulated
in float64 and rounded once to f32; exp and SiLU via float64; residual adds in f32.
"""

from __future__ import annotations

import numpy as np

from bitnet_lab.quant import ternary
from bitnet_lab.tensors import TernaryWeight

F16, F32, F64 = np.float16, np.float32, np.float64
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
QK = 256  # TQ block length


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    ss = np.sum((x * x).astype(F64))
    mean = F32(ss / x.size)
    scale = F32(1.0) / np.sqrt(mean + F32(eps))
    return (x * scale) * w


def rope_cos_sin(pos: int, n_dims: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    exponent = F32(-2.0) / F32(n_dims)
    ts = F32(F64(F32(base)) ** F64(exponent))
    theta = F32(pos)
    angles = []
    for _ in range(n_dims // 2):
        angles.append(theta)
        theta = F32(theta * ts)
    a = np.array(angles, dtype=F64)
    return np.cos(a).astype(F32), np.sin(a).astype(F32)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, style: str, rot: int) -> np.ndarray:
    """x: one head (d,) f32."""
    y = x.copy()
    half = rot // 2
    for i in range(half):
        a, b = (i, i + half) if style == "neox" else (2 * i, 2 * i + 1)
        x0, x1 = x[a], x[b]
        y[a] = F32(x0 * cos[i]) - F32(x1 * sin[i])
        y[b] = F32(x0 * sin[i]) + F32(x1 * cos[i])
    return y


class PlainModel:
    """``PlainModel(config, tensors, rounding=..., kv_dtype=..., lm_head_dtype=...)``;
    ``run(ids) -> (logits (T, V) f32, captures)`` from an empty cache, capture names as the
    reference's (a subset)."""

    def __init__(self, config, tensors, *, rounding="half_even", kv_dtype="f32", lm_head_dtype="auto"):
        self.c = config
        self.rounding = rounding
        self.kv_f16 = kv_dtype == "f16"
        self.w = {}
        blocky = False
        for i in range(config.n_layers):
            for p in PROJ:
                tw = tensors[f"blk.{i}.{p}.weight"]
                assert isinstance(tw, TernaryWeight), "the plain model reads ternary weights only"
                t = tw.ternary().astype(np.int64)
                if tw.block_scales is None:
                    self.w[(i, p)] = (t, F32(tw.gamma()), None)
                    continue
                M, K = t.shape
                d = np.asarray(tw.block_scales, F16).astype(F32).reshape(M, K // QK)
                used = (t.reshape(M, K // QK, QK) != 0).any(axis=2)
                vals = set(d[used].tolist())
                if len(vals) <= 1:
                    self.w[(i, p)] = (t, F32(vals.pop()) if vals else F32(0), None)
                else:
                    self.w[(i, p)] = (t, None, d)
                    blocky = True
        self.blocky = blocky
        self.norm = {k: v.to_numpy().astype(F32) for k, v in tensors.items() if k.endswith("norm.weight")}
        self.embd = tensors["token_embd.weight"].to_numpy().astype(F32)
        head = tensors["token_embd.weight"] if config.tied_output else tensors["output.weight"]
        self.lm_f16 = lm_head_dtype == "f16" or (lm_head_dtype == "auto" and head.ggml_type == "F16")
        lm = head.to_numpy()
        self.lm = (lm.astype(F16) if self.lm_f16 else lm.astype(F32)).astype(F64)
        self.out_scale = {(i, p): F32(tensors[f"blk.{i}.{p}.scale"].to_numpy().reshape(-1)[0])
                          for i in range(config.n_layers) for p in PROJ if f"blk.{i}.{p}.scale" in tensors}

    def bitlinear(self, i, p, q, s):
        t, gamma, d = self.w[(i, p)]
        M, K = t.shape
        acc = (t @ q.astype(np.int64)).astype(np.int32)
        if self.blocky:
            if d is None:
                d = np.full((M, K // QK), gamma, F32)
            acc_b = np.einsum("mbk,bk->mb", t.reshape(M, K // QK, QK), q.astype(np.int64).reshape(K // QK, QK))
            y = np.sum(acc_b.astype(F64) * d.astype(F64), axis=1).astype(F32) / s
        else:
            y = ternary.bitlinear_epilogue(acc, s, gamma)
        if (i, p) in self.out_scale:
            y = y * self.out_scale[(i, p)]
        return y.astype(F32), acc

    def run(self, ids):
        c = self.c
        d, nh, nkv = c.head_dim, c.n_heads, c.n_kv_heads
        rep = nh // nkv
        kq_scale = F32(1.0) / np.sqrt(F32(d))
        kdt = F16 if self.kv_f16 else F32
        K = [[] for _ in range(c.n_layers)]  # K[layer][pos] -> (n_kv, d)
        V = [[] for _ in range(c.n_layers)]
        caps: dict[str, list] = {}
        logits = []

        def put(name, val):
            caps.setdefault(name, []).append(np.asarray(val))

        for pos, tok in enumerate(ids):
            h = self.embd[tok].copy()
            put("embd", h)
            cos, sin = rope_cos_sin(pos, c.rot_dim, c.rope_theta)
            for i in range(c.n_layers):
                b = f"blk.{i}."
                a = rms_norm(h, self.norm[b + "attn_norm.weight"], c.norm_eps)
                put(b + "attn_norm", a)
                q8, s, sq = ternary.quantize_activations(a, self.rounding)
                put(b + "attn_in.q", q8), put(b + "attn_in.scale", s), put(b + "attn_in.sum", sq)
                outs = {}
                for p in ("attn_q", "attn_k", "attn_v"):
                    outs[p], acc = self.bitlinear(i, p, q8, s)
                    put(b + p + ".acc", acc), put(b + p + ".out", outs[p])
                qh = [rope(outs["attn_q"][j * d:(j + 1) * d], cos, sin, c.rope_style, c.rot_dim) for j in range(nh)]
                kh = [rope(outs["attn_k"][g * d:(g + 1) * d], cos, sin, c.rope_style, c.rot_dim) for g in range(nkv)]
                put(b + "q_rope", np.stack(qh)), put(b + "k_rope", np.stack(kh))
                K[i].append(np.stack(kh).astype(kdt))
                V[i].append(outs["attn_v"].reshape(nkv, d).astype(kdt))
                heads = []
                for j in range(nh):
                    g = j // rep  # GQA: query head j reads kv head j // n_rep
                    qv = qh[j].astype(F16) if self.kv_f16 else qh[j]
                    q64 = qv.astype(F64)
                    sc = np.array([F32(np.dot(q64, K[i][t][g].astype(F64))) for t in range(pos + 1)], F32)
                    sc = sc * kq_scale
                    e = np.exp((sc - sc.max()).astype(F64)).astype(F32)
                    pr = e * F32(1.0 / np.sum(e.astype(F64)))
                    if self.kv_f16:
                        pr = pr.astype(F16)
                    vm = np.stack([V[i][t][g] for t in range(pos + 1)]).astype(F64)
                    heads.append((pr.astype(F64) @ vm).astype(F32))
                o = np.concatenate(heads)
                put(b + "attn_out", o)
                if c.sub_norms:
                    o = rms_norm(o, self.norm[b + "attn_sub_norm.weight"], c.norm_eps)
                    put(b + "attn_sub_norm", o)
                q8, s, sq = ternary.quantize_activations(o, self.rounding)
                put(b + "attn_output_in.q", q8), put(b + "attn_output_in.scale", s), put(b + "attn_output_in.sum", sq)
                y, acc = self.bitlinear(i, "attn_output", q8, s)
                put(b + "attn_output.acc", acc), put(b + "attn_output.out", y)
                h = h + y
                put(b + "attn_resid", h)
                m = rms_norm(h, self.norm[b + "ffn_norm.weight"], c.norm_eps)
                put(b + "ffn_norm", m)
                q8, s, sq = ternary.quantize_activations(m, self.rounding)
                put(b + "ffn_in.q", q8), put(b + "ffn_in.scale", s), put(b + "ffn_in.sum", sq)
                gt, acc_g = self.bitlinear(i, "ffn_gate", q8, s)
                up, acc_u = self.bitlinear(i, "ffn_up", q8, s)
                put(b + "ffn_gate.acc", acc_g), put(b + "ffn_gate.out", gt)
                put(b + "ffn_up.acc", acc_u), put(b + "ffn_up.out", up)
                if c.activation == "relu2":
                    r = np.where(gt > 0, gt, F32(0)).astype(F32)
                    f = (r * r) * up
                else:
                    g64 = gt.astype(F64)
                    f = (g64 / (1.0 + np.exp(-g64))).astype(F32) * up
                put(b + "ffn_act", f)
                if c.sub_norms:
                    f = rms_norm(f, self.norm[b + "ffn_sub_norm.weight"], c.norm_eps)
                    put(b + "ffn_sub_norm", f)
                q8, s, sq = ternary.quantize_activations(f, self.rounding)
                put(b + "ffn_down_in.q", q8), put(b + "ffn_down_in.scale", s), put(b + "ffn_down_in.sum", sq)
                y, acc = self.bitlinear(i, "ffn_down", q8, s)
                put(b + "ffn_down.acc", acc), put(b + "ffn_down.out", y)
                h = h + y
                put(b + "ffn_resid", h)
            hn = rms_norm(h, self.norm["output_norm.weight"], c.norm_eps)
            put("output_norm", hn)
            hv = hn.astype(F16) if self.lm_f16 else hn
            lg = (self.lm @ hv.astype(F64)).astype(F32)
            put("logits", lg)
            logits.append(lg)
        return np.stack(logits), {k: np.stack(v) for k, v in caps.items()}
