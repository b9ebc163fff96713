"""Convert a Hugging Face BitNet checkpoint (local folder or Hub id) to GGUF.

``convert_hf_to_gguf(src, out, "i2_s")`` reads the checkpoint with ``formats.hf`` (latent
weights ternarised with absmean, packed weights unpacked with their ``weight_scale``
convention, llama q/k rows permuted), and streams it into ``formats.gguf_writer.GGUFWriter`` one
tensor at a time:

============  ==========================================  ===================
outtype       ternary projections                          ``general.file_type``
============  ==========================================  ===================
i2_s          I2_S (codes + f32 γ in the tail)              40
tl1 / tl2     TL1 / TL2 under a tiling (+ hidden γ slot)    38 / 39
tq1_0/tq2_0   TQ1_0 / TQ2_0 (fp16 block d = fp16(γ))        36 / 37
f16 / f32     t·γ as floats (what the upstream converters   1 / 0
              write for their F16/F32 outputs)
============  ==========================================  ===================

Non-ternary tensors follow docs/formats.md#66-dtype-of-the-non-ternary-tensors: the token embedding (and an
untied ``output``) as ``embedding_type`` (F16, or F32 for an f32 file, unless asked; F32, F16, BF16,
Q8_0 or Q6_K, the last two by llama.cpp's reference quantisers,
docs/formats.md#24-how-q8_0-and-q6_k-are-quantised), norms F32. Metadata: the
architecture keys of ``ModelConfig.gguf_metadata()``, ``general.file_type``,
``general.quantization_version = 2``, and the tokenizer keys of ``formats.vocab``. TL files also
record their tiling in ``bitnet_lab.tl_tiling`` (list of ``"M,K,BM,BK,bm"``), since the format
does not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from bitnet_lab.errors import CodecError, ConfigError
from bitnet_lab.quant.tiling import TLTiling, parse_tl_tiling, writer_tiling

__all__ = ["OUTTYPES", "EMBEDDING_TYPE", "EMBEDDING_TYPES", "FILE_TYPES", "check_output_path", "convert_hf_to_gguf"]

# outtype -> (ggml type name of the projections, general.file_type) (docs/formats.md#23-llama-file-types)
OUTTYPES: dict[str, tuple[str, int]] = {
    "i2_s": ("I2_S", 40),
    "tl1": ("TL1", 38),
    "tl2": ("TL2", 39),
    "tq1_0": ("TQ1_0", 36),
    "tq2_0": ("TQ2_0", 37),
    "f16": ("F16", 1),
    "f32": ("F32", 0),
}
FILE_TYPES = {k: v[1] for k, v in OUTTYPES.items()}
# --token-embedding-type -> ggml type of token_embd (and an untied output)
EMBEDDING_TYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q6_k": "Q6_K"}
EMBEDDING_TYPES = tuple(EMBEDDING_TYPE)
QUANTIZATION_VERSION = 2  # what gguf-py based converters write

TilingArg = Union[TLTiling, str, Mapping[Any, Union[TLTiling, str]], None]  # as quant.tiling.parse_tl_tiling accepts


def _layout_rule(outtype: str, name: str, M: int, K: int) -> None:
    """Row-length rules of the ternary layouts (docs/formats.md#31-i2_s-type-36,
    docs/formats.md#34-tq2_0-type-35 to docs/formats.md#36-row-length-constraints-per-family), named on
    failure."""
    if outtype == "i2_s" and K % 128:
        raise CodecError(
            f"{name}: (M, K) = ({M}, {K}): I2_S needs K % 128 == 0 (128-weight blocks must stay in "
            f"a row; {K} % 128 = {K % 128}), docs/formats.md#31-i2_s-type-36"
        )
    if outtype in ("tq1_0", "tq2_0") and K % 256:
        raise CodecError(
            f"{name}: (M, K) = ({M}, {K}): {outtype.upper()} needs K % 256 == 0 (256-weight blocks; "
            f"{K} % 256 = {K % 256}), docs/formats.md#34-tq2_0-type-35"
        )


def _float_producer(w_loader, type_name: str):
    """Producer of a non-ternary tensor converted to ``type_name`` (F32 / F16 / BF16 / Q8_0 / Q6_K)."""
    def produce() -> np.ndarray:
        x = w_loader().to_numpy()  # float32, exact for F32/F16/BF16 sources
        if type_name == "F32":
            return np.ascontiguousarray(x, dtype="<f4")
        if type_name == "F16":
            return np.ascontiguousarray(x.astype("<f2"))  # round to nearest even
        if type_name == "BF16":
            from bitnet_lab.formats.hf import bf16_bits

            return bf16_bits(x)
        from bitnet_lab.quant import blockquant

        # llama-quantize's reference quantisers, byte for byte (docs/formats.md#24-how-q8_0-and-q6_k-are-quantised)
        return blockquant.quantize(type_name, x)
    return produce


def _check_block_rows(name: str, type_name: str, shape: tuple[int, ...]) -> None:
    """Q8_0 / Q6_K blocks run along rows: the row length must be a whole number of blocks."""
    from bitnet_lab.quant.blockquant import BLOCK_SIZES

    blk = BLOCK_SIZES[type_name][0]
    if shape[-1] % blk:
        hint = " (q8_0 needs a multiple of 32)" if type_name == "Q6_K" and shape[-1] % 32 == 0 else ""
        raise ConfigError(
            f"{name}: rows of {shape[-1]} values cannot be stored as {type_name}, whose blocks hold {blk} "
            f"values; choose another --token-embedding-type{hint}"
        )


def _vtype(key: str):
    """GGUF value type for tokenizer keys (formats.vocab.TOKENIZER_KEY_TYPES); None = infer."""
    from gguf import GGUFValueType as VT

    from bitnet_lab.formats.vocab import key_type

    kt = key_type(key)
    return {
        "str": VT.STRING, "u32": VT.UINT32, "bool": VT.BOOL,
        "str[]": (VT.ARRAY, VT.STRING), "f32[]": (VT.ARRAY, VT.FLOAT32), "i32[]": (VT.ARRAY, VT.INT32),
    }.get(kt) if kt else None


def check_output_path(out_path: Union[str, os.PathLike]) -> Path:
    """The output file's path, or a ConfigError naming what is wrong with it before any work is
    done: an existing folder (not the ``.tmp`` name the writer would fail on), or a folder that
    does not exist (nothing creates folders behind the user's back)."""
    out = Path(os.fspath(out_path)).expanduser()
    if out.is_dir():
        raise ConfigError(f"the output path {out} is a folder: give a file name, e.g. {out / 'model.gguf'}")
    if not out.parent.is_dir():
        raise ConfigError(f"the output folder {out.parent} does not exist: create it first")
    return out


def convert_hf_to_gguf(
    src: Union[str, os.PathLike],
    out_path: Union[str, os.PathLike],
    outtype: str = "i2_s",
    *,
    tl_tiling: TilingArg = None,
    embedding_type: str | None = None,
    vocab: Union[str, os.PathLike, None] = None,
    tokenizer_pre: str | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> Path:
    """Convert ``src`` (checkpoint folder, ``.safetensors`` file or Hub repo id) to a GGUF file.

    - ``outtype``: one of OUTTYPES (i2_s, tl1, tl2, tq1_0, tq2_0, f16, f32);
    - ``tl_tiling``: TL1/TL2 only; one TLTiling or ``{(M, K) or tensor name: TLTiling}``;
      missing shapes use ``quant.tiling.default_tiling``;
    - ``embedding_type``: f16 / f32 / bf16 / q8_0 / q6_k for ``token_embd`` (and an untied
      ``output``); default f32 for an f32 file, else f16;
    - ``vocab``: a GGUF file to copy the ``tokenizer.*`` keys from, instead of the checkpoint's
      tokenizer.json / tokenizer.model; ``tokenizer_pre``: the BPE pre-tokenizer name when it
      cannot be recognised;
    - ``progress``: tqdm bars while writing.

    Shapes a layout cannot hold (e.g. K % 128 != 0 for I2_S) raise CodecError naming the tensor
    and the rule. Returns the output path.
    """
    from bitnet_lab.formats import hub
    from bitnet_lab.formats.gguf_writer import GGUFWriter
    from bitnet_lab.formats.hf import HFCheckpoint
    from bitnet_lab.formats.names import projection_of
    from bitnet_lab.formats.vocab import vocab_metadata_from_gguf, vocab_metadata_from_hf
    from bitnet_lab.quant import packing

    if outtype not in OUTTYPES:
        raise ConfigError(f"outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    emb = embedding_type or ("f32" if outtype == "f32" else "f16")
    if emb not in EMBEDDING_TYPES:
        raise ConfigError(f"embedding_type {embedding_type!r} is not one of {', '.join(EMBEDDING_TYPES)}")
    if tl_tiling is not None and outtype not in ("tl1", "tl2"):
        raise ConfigError(f"tl_tiling= is for tl1/tl2 output, not {outtype}")
    tl_request = parse_tl_tiling(tl_tiling)  # a bad value is refused before anything is read

    check_output_path(out_path)
    src_str = os.fspath(src)
    path = hub.resolve(src_str, revision=revision) if hub.is_repo_id(src_str) else Path(src_str)
    if path.is_file() and path.suffix == ".gguf":
        raise ConfigError(f"{path} is already a GGUF file: use it as it is (-m {path}); convert reads a "
                          "Hugging Face safetensors checkpoint (a folder with config.json and *.safetensors)")
    ck = HFCheckpoint(path)
    mc = ck.config
    folder = ck.folder

    # ---- metadata ---------------------------------------------------------------------------
    ternary_type, file_type = OUTTYPES[outtype]
    metadata: dict[str, Any] = mc.gguf_metadata()
    if not mc.name:
        metadata["general.name"] = src_str.rstrip("/").split("/")[-1] if hub.is_repo_id(src_str) else folder.name
    metadata["general.file_type"] = file_type
    metadata["general.quantization_version"] = QUANTIZATION_VERSION
    if vocab is not None:
        tok_md = vocab_metadata_from_gguf(vocab)
        n_tok = len(tok_md["tokenizer.ggml.tokens"])
        if n_tok != mc.vocab:
            raise ConfigError(f"{vocab}: {n_tok} tokens, but the model's vocab_size is {mc.vocab}")
    else:
        tok_md = vocab_metadata_from_hf(folder, vocab_size=mc.vocab, pre=tokenizer_pre,
                                        name_hint=f"{src_str} {mc.name}")

    writer = GGUFWriter(out_path, progress=progress)
    for k, v in metadata.items():
        writer.add_metadata(k, v)
    for k, v in tok_md.items():
        writer.add_metadata(k, v, _vtype(k))

    # ---- tensors: declared with producers; GGUFWriter calls them one at a time -------------------
    for name, shape in ck.shapes.items():
        load = (lambda g=name: ck.load(g))
        if projection_of(name) is None:
            if name in ("token_embd.weight", "output.weight"):
                tn = EMBEDDING_TYPE[emb]
                if tn in ("Q8_0", "Q6_K"):
                    _check_block_rows(name, tn, shape)
            else:
                tn = "F32"  # norms (docs/formats.md#66-dtype-of-the-non-ternary-tensors)
            writer.add_tensor(name, tn, shape, _float_producer(load, tn))
            continue
        M, K = shape
        _layout_rule(outtype, name, M, K)
        if outtype in ("f16", "f32"):
            dt = "<f4" if outtype == "f32" else "<f2"

            def produce(load=load, dt=dt) -> np.ndarray:
                w = load()
                # t·γ in float32 is exact (±γ); F16 then rounds γ once.
                return (w.ternary().astype(np.float32) * np.float32(w.scale)).astype(dt)

            writer.add_tensor(name, ternary_type, shape, produce)
        elif outtype in ("i2_s", "tq1_0", "tq2_0"):

            def produce_packed(load=load, lay=outtype) -> np.ndarray:
                w = load()
                # I2_S: codes + tail holding γ; TQ: blocks with d = fp16(γ) (docs/formats.md#31-i2_s-type-36,
                # docs/formats.md#34-tq2_0-type-35)
                return packing.pack(lay, w.ternary(), scale=w.scale)

            writer.add_tensor(name, ternary_type, shape, produce_packed)
        else:  # tl1 / tl2: γ goes in the hidden slot, so it is needed when declaring
            tiling = writer_tiling(outtype, M, K, tl_request, name)
            gamma = ck.gamma(name)

            def produce_tl(load=load, lay=outtype, tiling=tiling, gamma=gamma) -> np.ndarray:
                w = load()
                if np.float32(w.scale) != gamma:  # same computation twice: must agree exactly
                    raise CodecError(f"{w.name}: γ changed between passes ({gamma} then {w.scale})")
                return packing.pack(lay, w.ternary(), tiling=tiling)

            writer.add_tensor(name, ternary_type, shape, produce_tl, tl_scale=float(gamma), tiling=tiling)
    return writer.write()


def describe(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """What ``convert_hf_to_gguf`` would read from ``path``: config and conventions (no data)."""
    from bitnet_lab.formats.hf import HFCheckpoint

    ck = HFCheckpoint(path)
    return {"config": ck.config, **ck.info}
