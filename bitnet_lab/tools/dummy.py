"""Dummy models: complete, loadable GGUF files with random weights that look trained.

``generate_dummy("2B-4T", "x.gguf", outtype="i2_s")`` writes a file with the tensor list,
types and metadata of the official BitNet-b1.58-2B-4T GGUF (docs/formats.md#53-the-official-2b-4t-gguf,
docs/formats.md#63-2b-4t-gguf-tensors), random ternary weights, and the real Llama-3 tokenizer, so every tool
that reads the real file reads this one. The same for every layout of `bitnet_lab.tools.layouts`.

How it stays small and reproducible:

- **Streamed**: each tensor is produced by a callback the GGUF writer calls when it reaches
  that tensor's bytes, so at most one tensor is in memory (the F16 embedding of the 2B-4T,
  656 MB, is the largest).
- **Deterministic per tensor**: every tensor draws from its own generator seeded by
  ``(seed, tensor name)`` (`tensor_rng`), so any tensor can be regenerated alone and the same
  seed gives a byte-identical file.
- **Planned first**: `plan_tensors` lists names, types and shapes (what tests check against
  docs/formats.md#63-2b-4t-gguf-tensors without writing a byte); `generate_dummy` writes exactly that plan.

Weight statistics (what "looks trained" means here):

- ternary codes: about a third zeros — absmean ternarisation of Gaussian latent weights zeroes
  ``P(|w| < γ/2) = 2Φ(0.5·√(2/π)) − 1 ≈ 0.31`` of them (docs/numerics.md#1-weight-ternarisation); each tensor
  draws its zero share in [0.30, 0.36] and each row varies around it (σ 0.02), ±1 symmetric;
- per-tensor scale γ: log-uniform in the layout's ``gamma_range`` (≈ 1–2 for the 2B-4T class,
  docs/formats.md#74-weight_scale-multiply-or-divide; ≈ 1/400–1/50 for the Llama fine-tunes);
- norms: 1 + N(0, 0.1²); embeddings (and an untied ``output``): N(0, σ²), σ from the layout.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.tools.layouts import VOCAB_LLAMA2, VOCAB_LLAMA3, VOCAB_SIZES, Layout, get_layout
from bitnet_lab.quant.tiling import TLTiling, parse_tl_tiling, writer_tiling

# Bump whenever the bytes written for a given (layout, outtype, seed, options) change: the
# default model cache regenerates files whose recorded version differs.
GENERATOR_VERSION = "1"

OUTTYPES = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32")
TERNARY_OUTTYPES = ("i2_s", "tl1", "tl2", "tq1_0", "tq2_0")
EMBEDDING_TYPES = ("f16", "f32", "bf16", "q8_0", "q6_k")

# ggml type names of the projections per outtype (docs/formats.md#2-ggml-type-ids).
PROJECTION_TYPE = {
    "i2_s": "I2_S", "tl1": "TL1", "tl2": "TL2", "tq1_0": "TQ1_0", "tq2_0": "TQ2_0",
    "f16": "F16", "f32": "F32",
}
EMBEDDING_TYPE = {"f16": "F16", "f32": "F32", "bf16": "BF16", "q8_0": "Q8_0", "q6_k": "Q6_K"}

# general.file_type per outtype (docs/formats.md#23-llama-file-types: the fork's llama_ftype; 0/1 = ALL_F32 /
# MOSTLY_F16 in every numbering).
FILE_TYPE = {"f32": 0, "f16": 1, "tq1_0": 36, "tq2_0": 37, "tl1": 38, "tl2": 39, "i2_s": 40}

# Our own metadata keys.
DUMMY_LAYOUT_KEY = "bitnet_lab.tools.dummy.layout"
DUMMY_SEED_KEY = "bitnet_lab.tools.dummy.seed"
DUMMY_VERSION_KEY = "bitnet_lab.tools.dummy.generator_version"

# gguf-py TokenType values (docs/formats.md#81-two-tokenizer-kinds).
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5

# Rows of the embedding generated per step: bounds the float32 scratch to ~10 MB for H = 2560.
# Part of the determinism contract (the random stream is consumed in chunks of this size).
EMBED_CHUNK_ROWS = 1024

# Statistics of the random weights (module docstring).
ZERO_SHARE_RANGE = (0.30, 0.36)  # per-tensor share of zero codes
ZERO_SHARE_ROW_SD = 0.02         # per-row spread around it
NORM_SD = 0.1                    # norm weights: 1 + N(0, NORM_SD²)

# Per-layer tensor order of the official 2B-4T file (docs/formats.md#63-2b-4t-gguf-tensors); llama layouts
# drop the sub-norms (docs/formats.md#65-llama-architecture-families).
_LAYER_ORDER = (
    ("attn_norm", "norm"),
    ("attn_q", "ternary"),
    ("attn_k", "ternary"),
    ("attn_v", "ternary"),
    ("attn_output", "ternary"),
    ("attn_sub_norm", "subnorm_attn"),
    ("ffn_norm", "norm"),
    ("ffn_gate", "ternary"),
    ("ffn_up", "ternary"),
    ("ffn_down", "ternary"),
    ("ffn_sub_norm", "subnorm_ffn"),
)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of a dummy file. ``shape`` is torch order ((M, K) for weights, (n,) for norms)."""

    name: str
    kind: str                     # "embedding" | "output" | "norm" | "ternary"
    ggml_type: str                # "I2_S", "F16", ...
    shape: tuple[int, ...]
    tiling: TLTiling | None = None

    @property
    def ggml_shape(self) -> tuple[int, ...]:
        """Dims as GGUF stores them (ne0 first), e.g. [2560, 6912] for ffn_gate of the 2B-4T."""
        return tuple(reversed(self.shape))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the blob as stored (hidden TL scale slot excluded)."""
        t = self.ggml_type
        if t == "F32":
            return 4 * self.n_elements
        if t in ("F16", "BF16", "Q8_0", "Q6_K"):
            from bitnet_lab.quant.blockquant import block_nbytes

            return block_nbytes(t, self.n_elements)
        from bitnet_lab.quant import packing

        M, K = self.shape
        return int(packing.ternary_blob_nbytes(t.lower(), M, K, tiling=self.tiling))


def _check_choice(what: str, value: str, allowed: Iterable[str]) -> str:
    v = str(value).lower()
    allowed = tuple(allowed)
    if v not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return v


def resolve_embedding_type(outtype: str, embedding_type: str | None) -> str:
    """The token-embedding type: as asked, else F32 for an all-F32 file and F16 otherwise
    (llama-quantize's default for I2_S / TQ, docs/formats.md#66-dtype-of-the-non-ternary-tensors)."""
    if embedding_type is None:
        return "f32" if outtype == "f32" else "f16"
    return _check_choice("embedding type", embedding_type, EMBEDDING_TYPES)


def plan_tensors(
    layout: str | Layout,
    outtype: str = "i2_s",
    *,
    embedding_type: str | None = None,
    tl_tiling: Any = None,
) -> list[TensorPlan]:
    """The tensors a dummy of ``layout`` has, in file order, with their types and shapes.

    Order (docs/formats.md#63-2b-4t-gguf-tensors): ``token_embd``, ``output_norm``, ``output`` (untied
    layouts), then per layer attn_norm, attn_q/k/v/output, attn_sub_norm, ffn_norm, ffn_gate/up/down,
    ffn_sub_norm (sub-norms only for the bitnet archs). Types
    (docs/formats.md#66-dtype-of-the-non-ternary-tensors): embedding and output as ``embedding_type``; norms
    F32; projections in the ``outtype``.
    Raises ConfigError when a projection's shape cannot be stored in ``outtype`` (e.g. the 3B's
    K = 8640 in I2_S), naming the tensor and the rule.
    """
    lay = get_layout(layout)
    outtype = _check_choice("outtype", outtype, OUTTYPES)
    emb = EMBEDDING_TYPE[resolve_embedding_type(outtype, embedding_type)]
    tl_request = parse_tl_tiling(tl_tiling)
    c = lay.config
    block = {"Q8_0": 32, "Q6_K": 256}.get(emb, 1)
    if c.hidden % block:
        raise ConfigError(
            f"layout {lay.name}: a {emb} embedding needs hidden % {block} == 0 (blocks of {block} along a row), "
            f"got hidden = {c.hidden}"
        )

    proj_type = PROJECTION_TYPE[outtype]
    plan = [TensorPlan("token_embd.weight", "embedding", emb, (c.vocab, c.hidden))]
    plan.append(TensorPlan("output_norm.weight", "norm", "F32", (c.hidden,)))
    if not c.tied_output:
        plan.append(TensorPlan("output.weight", "output", emb, (c.vocab, c.hidden)))
    shapes = c.projection_shapes()
    for i in range(c.n_layers):
        for short, kind in _LAYER_ORDER:
            name = f"blk.{i}.{short}.weight"
            if kind == "norm":
                plan.append(TensorPlan(name, "norm", "F32", (c.hidden,)))
            elif kind.startswith("subnorm"):
                if c.sub_norms:
                    width = c.q_dim if kind == "subnorm_attn" else c.ffn
                    plan.append(TensorPlan(name, "norm", "F32", (width,)))
            else:
                M, K = shapes[short]
                tiling = None
                if outtype in ("tl1", "tl2"):
                    tiling = writer_tiling(outtype, M, K, tl_request, name)
                elif outtype in TERNARY_OUTTYPES:
                    _check_row_length(outtype, name, M, K, lay.name)
                plan.append(TensorPlan(name, "ternary", proj_type, (M, K), tiling))
    return plan


def _check_row_length(outtype: str, name: str, M: int, K: int, layout_name: str) -> None:
    """I2_S needs K % 128 == 0, TQ1_0/TQ2_0 K % 256 == 0
    (docs/formats.md#36-row-length-constraints-per-family)."""
    need = 128 if outtype == "i2_s" else 256
    if K % need:
        raise ConfigError(
            f"layout {layout_name} cannot be written as {outtype.upper()}: {name} has K = {K}, "
            f"and {outtype.upper()} needs K % {need} == 0 "
            "(docs/formats.md#36-row-length-constraints-per-family)"
        )


# ---------------------------------------------------------------------------------------------
# Random tensors
# ---------------------------------------------------------------------------------------------


def tensor_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one tensor: seeded by (seed, name) only, so any tensor can be
    regenerated without the others."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=16).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, *words]))


def random_ternary(rng: np.random.Generator, M: int, K: int) -> np.ndarray:
    """int8 (M, K) codes in {-1, 0, 1}: zero share per tensor in ZERO_SHARE_RANGE, per row
    ± ZERO_SHARE_ROW_SD, the rest split evenly between -1 and +1."""
    p0 = rng.uniform(*ZERO_SHARE_RANGE)
    row_p0 = np.clip(p0 + rng.normal(0.0, ZERO_SHARE_ROW_SD, size=(M, 1)), 0.05, 0.95)
    # One uniform byte per weight against per-row thresholds (1/256 resolution is plenty):
    # byte < lo -> -1, lo <= byte < hi -> 0, byte >= hi -> +1.
    lo = np.rint(256.0 * (1.0 - row_p0) / 2.0).astype(np.int16)
    hi = lo + np.rint(256.0 * row_p0).astype(np.int16)
    u = rng.integers(0, 256, size=(M, K), dtype=np.uint8)
    t = (u >= hi).astype(np.int8)
    t -= (u < lo).astype(np.int8)
    return t


def random_gamma(rng: np.random.Generator, gamma_range: tuple[float, float]) -> np.float32:
    """Per-tensor scale, log-uniform in ``gamma_range``."""
    lo, hi = gamma_range
    return np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_norm(rng: np.random.Generator, n: int) -> np.ndarray:
    return (np.float32(1.0) + rng.normal(0.0, NORM_SD, size=n).astype(np.float32)).astype(np.float32)


def _float_blob(ggml_type: str, x: np.ndarray) -> np.ndarray:
    """float32 rows → the bytes of an F32 / F16 / BF16 / Q8_0 / Q6_K tensor (uint8, flat)."""
    if ggml_type == "F32":
        return np.ascontiguousarray(x, dtype="<f4").reshape(-1).view(np.uint8)
    if ggml_type == "F16":
        return np.ascontiguousarray(x.astype("<f2")).reshape(-1).view(np.uint8)
    if ggml_type in ("BF16", "Q8_0", "Q6_K"):
        from bitnet_lab.quant import blockquant

        # BF16 rounds to nearest even; Q8_0 / Q6_K are llama.cpp's reference quantisers
        # (docs/formats.md#24-how-q8_0-and-q6_k-are-quantised).
        return np.frombuffer(_as_bytes(blockquant.quantize(ggml_type, x)), dtype=np.uint8)
    raise ConfigError(f"no float encoder for {ggml_type}")  # pragma: no cover - plan guards it


def _as_bytes(blob: Any) -> Any:
    """A bytes-like view of whatever a codec returned (bytes, bytearray, numpy array)."""
    if isinstance(blob, np.ndarray):
        return np.ascontiguousarray(blob).reshape(-1).view(np.uint8)
    return blob


def random_embedding_blob(rng: np.random.Generator, plan: TensorPlan, sigma: float) -> np.ndarray:
    """N(0, σ²) rows of (V, H), encoded chunk by chunk straight into the output buffer."""
    V, H = plan.shape
    out = np.empty(plan.nbytes, dtype=np.uint8)
    row_bytes = plan.nbytes // V
    for r0 in range(0, V, EMBED_CHUNK_ROWS):
        r1 = min(V, r0 + EMBED_CHUNK_ROWS)
        x = rng.standard_normal(size=(r1 - r0, H), dtype=np.float32)
        x *= np.float32(sigma)
        out[r0 * row_bytes : r1 * row_bytes] = _float_blob(plan.ggml_type, x)
    return out


def tensor_blob(plan: TensorPlan, layout: Layout, seed: int) -> tuple[Any, np.float32 | None]:
    """The bytes of one planned tensor as stored in GGUF, and its TL scale (else None).

    Depends only on (plan, layout statistics, seed): regenerating one tensor needs nothing else.
    """
    rng = tensor_rng(seed, plan.name)
    if plan.kind in ("embedding", "output"):
        return random_embedding_blob(rng, plan, layout.embed_sigma), None
    if plan.kind == "norm":
        return _float_blob("F32", random_norm(rng, plan.shape[0])), None
    M, K = plan.shape
    gamma = random_gamma(rng, layout.gamma_range)
    t = random_ternary(rng, M, K)
    kind = plan.ggml_type.lower()
    if plan.ggml_type in ("F32", "F16"):
        # The converters fold the scale into float projections: W = t·γ
        # (docs/formats.md#4-where-per-tensor-scales-live).
        return _float_blob(plan.ggml_type, t.astype(np.float32) * gamma), None
    from bitnet_lab.quant import packing

    if kind in ("tq1_0", "tq2_0"):
        # Every 256-block's fp16 d is γ: what TQ quantisation of t·γ produces
        # (docs/formats.md#34-tq2_0-type-35).
        d = np.full((M, K // 256), gamma, dtype=np.float16)
        return _as_bytes(packing.pack(kind, t, block_scales=d)), None
    blob = _as_bytes(packing.pack(kind, t, scale=gamma, tiling=plan.tiling))
    return blob, (gamma if kind in ("tl1", "tl2") else None)


def regenerate_tensor(layout: str | Layout, name: str, *, outtype: str = "i2_s", seed: int = 0,
                      embedding_type: str | None = None, tl_tiling: Any = None) -> tuple[Any, np.float32 | None]:
    """The blob of one tensor of a dummy file, without generating the others."""
    lay = get_layout(layout)
    for p in plan_tensors(lay, outtype, embedding_type=embedding_type, tl_tiling=tl_tiling):
        if p.name == name:
            return tensor_blob(p, lay, seed)
    raise ConfigError(f"layout {lay.name} has no tensor {name!r}")


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------

_VOCAB_DESCRIPTION = {
    VOCAB_LLAMA3: "Llama-3 byte-level BPE vocabulary (128256 tokens) from llama.cpp's models/ggml-vocab-llama-bpe.gguf",
    VOCAB_LLAMA2: "Llama-2 SentencePiece vocabulary (32000 tokens) from llama.cpp's models/ggml-vocab-llama-spm.gguf",
}


def _vocab_path(source: str) -> Path:
    from bitnet_lab import paths

    return {VOCAB_LLAMA3: paths.LLAMA3_VOCAB, VOCAB_LLAMA2: paths.LLAMA2_VOCAB}[source]


def extra_token_names(layout: Layout) -> list[tuple[str, int]]:
    """The tokens appended to the source vocabulary, as (text, token type).

    A pad id the layout declares becomes ``<pad>`` (CONTROL); every other extra id is
    ``<bitnet_lab_unused_N>`` (UNUSED), N its id. E.g. the 32002-token 1bitLLM / bitnet.cpp
    dummy vocab = Llama-2's 32000 + ``<pad>`` (32000) + ``<bitnet_lab_unused_32001>``."""
    base = VOCAB_SIZES[layout.vocab_source]
    out = []
    for i in range(base, layout.config.vocab):
        if i == layout.config.pad_id:
            out.append(("<pad>", TOKEN_CONTROL))
        else:
            out.append((f"<bitnet_lab_unused_{i}>", TOKEN_UNUSED))
    return out


def tokenizer_metadata(layout: Layout) -> dict[str, Any]:
    """The tokenizer.* keys of a dummy of ``layout``: the source vocabulary's keys, extended to
    the layout's vocab size, with add_bos and the special ids the layout's config names."""
    from bitnet_lab.formats.vocab import vocab_metadata_from_gguf

    md = dict(vocab_metadata_from_gguf(_vocab_path(layout.vocab_source)))
    extra = extra_token_names(layout)
    if extra:
        md["tokenizer.ggml.tokens"] = list(md["tokenizer.ggml.tokens"]) + [t for t, _ in extra]
        md["tokenizer.ggml.token_type"] = np.concatenate(
            [np.asarray(md["tokenizer.ggml.token_type"], dtype=np.int32),
             np.array([k for _, k in extra], dtype=np.int32)]
        )
        if "tokenizer.ggml.scores" in md:
            md["tokenizer.ggml.scores"] = np.concatenate(
                [np.asarray(md["tokenizer.ggml.scores"], dtype=np.float32), np.zeros(len(extra), np.float32)]
            )
    n = len(md["tokenizer.ggml.tokens"])
    if n != layout.config.vocab:  # pragma: no cover - layouts are checked by the tests
        raise ConfigError(f"layout {layout.name}: vocabulary has {n} tokens, config says {layout.config.vocab}")
    c = layout.config
    md["tokenizer.ggml.add_bos_token"] = True
    for key, value in (
        ("tokenizer.ggml.bos_token_id", c.bos_id),
        ("tokenizer.ggml.eos_token_id", c.eos_id),
        ("tokenizer.ggml.eot_token_id", c.eot_id),
        ("tokenizer.ggml.padding_token_id", c.pad_id),
    ):
        if value is not None:
            md[key] = int(value)
    if layout.chat_template is not None:
        md["tokenizer.chat_template"] = layout.chat_template
    return md


def describe_dummy(layout: Layout, seed: int) -> str:
    """``general.description`` of a dummy: what it is, and where its tokenizer came from."""
    text = (
        f"bitnet_lab dummy model: random weights with trained-model statistics (not a trained "
        f"model), layout {layout.name} ({layout.family}), seed {seed}, generator v{GENERATOR_VERSION}. "
        f"Tokenizer: {_VOCAB_DESCRIPTION[layout.vocab_source]}"
    )
    extra = extra_token_names(layout)
    if extra:
        text += (
            f", extended to {layout.config.vocab} tokens with {len(extra)} added token(s): "
            + ", ".join(f"{t} ({'CONTROL' if k == TOKEN_CONTROL else 'UNUSED'})" for t, k in extra[:3])
            + (f", … {extra[-1][0]}" if len(extra) > 3 else "")
        )
    if layout.notes and "tokenizer" in layout.notes.lower():
        text += f". Note: {layout.notes}"
    return text + "."


def check_arch_name(layout: Layout, arch_name: str | None) -> str:
    """The ``general.architecture`` a dummy of ``layout`` is written under: the layout's own, or
    another name of the same graph family. llama.cpp and bitnet.cpp call the 2B-4T graph
    ``bitnet`` (the real files do, docs/formats.md#53-the-official-2b-4t-gguf); our activation key keeps the
    graph exact under any bitnet name. A sub-norm graph cannot be called ``llama`` and vice versa."""
    from bitnet_lab.config import ARCHS

    own = layout.config.arch
    if arch_name is None or arch_name == own:
        return own
    bitnet_names = tuple(a for a in ARCHS if a.startswith("bitnet"))
    allowed = bitnet_names if layout.config.sub_norms else ("llama",)
    if arch_name not in allowed:
        raise ConfigError(
            f"arch name {arch_name!r} cannot carry the {layout.name} graph "
            f"({'sub-norms' if layout.config.sub_norms else 'no sub-norms'}); choose one of {', '.join(allowed)}"
        )
    return arch_name


def dummy_metadata(layout: Layout, outtype: str, seed: int, plan: list[TensorPlan],
                   arch_name: str | None = None) -> dict[str, Any]:
    """Every metadata key of a dummy file, in writing order (``arch_name``: check_arch_name)."""
    c = replace(layout.config, arch=check_arch_name(layout, arch_name))
    md: dict[str, Any] = dict(c.gguf_metadata())
    md["general.name"] = c.name
    md["general.description"] = describe_dummy(layout, seed)
    md["general.file_type"] = FILE_TYPE[outtype]
    md["general.quantization_version"] = 2
    if layout.rope_scaling_linear:
        # bitnet.cpp's dummy generator writes these (docs/formats.md#9-dummy-model-layouts).
        md[f"{c.arch}.rope.scaling.type"] = "linear"
        md[f"{c.arch}.rope.scaling.factor"] = 1.0
    md[DUMMY_LAYOUT_KEY] = layout.name
    md[DUMMY_SEED_KEY] = int(seed)
    md[DUMMY_VERSION_KEY] = GENERATOR_VERSION
    md.update(tokenizer_metadata(layout))
    return md


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def generate_dummy(
    layout: str | Layout,
    out_path: str | os.PathLike,
    *,
    outtype: str = "i2_s",
    seed: int = 0,
    embedding_type: str | None = None,
    tl_tiling: Any = None,
    arch_name: str | None = None,
    tiling_key: bool = True,
    progress: bool = True,
) -> Path:
    """Write a dummy GGUF of ``layout`` to ``out_path`` and return its path.

    ``outtype``: projection type (i2_s, tl1, tl2, tq1_0, tq2_0, f16, f32). ``embedding_type``:
    f16 / f32 / bf16 / q8_0 / q6_k for ``token_embd`` (and an untied ``output``); default F16,
    or F32 when ``outtype == "f32"``. ``tl_tiling``: for TL outtypes, one tiling "BM,BK,bm" / `TLTiling`
    for every shape or a mapping per (M, K); default per shape from
    `bitnet_lab.quant.tiling.default_tiling`; recorded in the file (``bitnet_lab.tl_tiling``).
    ``arch_name``: write ``general.architecture`` (and the hyper-parameter keys) under this name
    instead of the layout's, e.g. ``"bitnet"`` for the 2B-4T so that llama.cpp reads the file
    (see :func:`check_arch_name`). ``tiling_key=False``: leave ``bitnet_lab.tl_tiling`` out, as
    bitnet.cpp's own TL files do (a reader then needs a preset or ``tl_tiling=``). The file appears atomically (written to a temporary name, then
    renamed).
    """
    from bitnet_lab.formats.gguf_writer import GGUFWriter

    lay = get_layout(layout)
    outtype = _check_choice("outtype", outtype, OUTTYPES)
    seed = int(seed)
    if seed < 0 or seed >= 2**64:
        raise ConfigError(f"seed must be in [0, 2**64), got {seed}")
    plan = plan_tensors(lay, outtype, embedding_type=embedding_type, tl_tiling=tl_tiling)
    metadata = dummy_metadata(lay, outtype, seed, plan, arch_name)
    out_path = Path(out_path).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    total = sum(p.nbytes for p in plan)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"dummy {lay.name} {outtype}", disable=not progress)

    try:
        # GGUFWriter writes <out_path>.tmp and renames it: the file appears only when complete.
        writer = GGUFWriter(out_path, alignment=32)
        for key, value in metadata.items():
            writer.add_metadata(key, value)
        for p in plan:
            tl = {}
            if p.tiling is not None:
                # The TL scale goes into the hidden slot after the tensor; the writer needs it
                # up front. random_gamma is the first draw of the tensor's generator, so this
                # is the same γ that tensor_blob packs. The tiling goes to bitnet_lab.tl_tiling.
                tl = {"tl_scale": random_gamma(tensor_rng(seed, p.name), lay.gamma_range),
                      "tiling": p.tiling if tiling_key else None}
            writer.add_tensor(p.name, p.ggml_type, p.shape, _producer(p, lay, seed, bar), **tl)
        writer.write()
    finally:
        bar.close()
    return out_path


def _producer(plan: TensorPlan, layout: Layout, seed: int, bar: Any) -> Callable[[], Any]:
    def produce() -> Any:
        blob, _ = tensor_blob(plan, layout, seed)
        bar.update(plan.nbytes)
        return blob

    return produce

