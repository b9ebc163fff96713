"""ModelConfig: the hyper-parameters of every supported family, in one frozen dataclass.

Built from GGUF metadata (plus the tensor names, which say whether sub-norms and an untied
``output`` exist) or from a Hugging Face ``config.json``. Facts:
docs/formats.md#5-architecture-names-and-metadata-keys to docs/formats.md#7-hugging-face-safetensors-layouts,
docs/numerics.md#5-rope (RoPE style), docs/numerics.md#7-ffn-activation-relu-squared-vs-silu (activation),
docs/numerics.md#8-sub-norm-placement (sub-norms).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from bitnet_lab.errors import ConfigError

ARCHS = ("bitnet-b1.58", "bitnet-25", "bitnet", "llama")
ACTIVATIONS = ("relu2", "silu")
ROPE_STYLES = ("neox", "norm")  # neox: dim i pairs with i + d/2; norm (interleaved): 2i with 2i+1

# Our own metadata key: the FFN activation is not derivable from the architecture string
# (docs/formats.md#51-architecture-strings), so files we write say it explicitly; other files fall back to
# the rules.
ACTIVATION_KEY = "bitnet_lab.hidden_act"

# The largest value any count or dimension may take: the native side indexes with C ints, and no
# real model comes near it (a larger number in a file is damage, not a model).
MAX_DIM = 2**31 - 1
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelConfig:
    arch: str                   # one of ARCHS
    hidden: int                 # H, embedding_length
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int                    # I, feed_forward_length
    vocab: int
    context: int                # training context length
    rope_theta: float
    rope_style: str             # "neox" | "norm"; llama-arch GGUF q/k rows are permuted -> "norm"
    norm_eps: float
    activation: str             # "relu2" | "silu"
    sub_norms: bool             # attn_sub_norm / ffn_sub_norm present
    tied_output: bool           # lm_head is token_embd
    rope_dim: int | None = None  # rotated dims per head; None = head_dim
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch {self.arch!r} is not one of {ARCHS}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.rope_style not in ROPE_STYLES:
            problems.append(f"rope_style {self.rope_style!r} is not one of {ROPE_STYLES}")
        for f in ("hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn", "vocab", "context"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_DIM:
                problems.append(f"{f} must be an integer in 1..{MAX_DIM}, got {_show(v)}")
        if self.rope_dim is not None and (isinstance(self.rope_dim, bool) or not isinstance(self.rope_dim, int)
                                          or self.rope_dim <= 0):
            problems.append(f"rope_dim must be a positive integer or None, got {_show(self.rope_dim)}")
        if not problems:
            if self.n_heads % self.n_kv_heads:
                problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
            if self.rot_dim > self.head_dim or self.rot_dim % 2:
                problems.append(f"rope_dim {self.rot_dim} must be even and <= head_dim {self.head_dim}")
        for f in ("norm_eps", "rope_theta"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                problems.append(f"{f} must be a finite number > 0, got {_show(v)}")
        if problems:
            raise ConfigError("invalid ModelConfig: " + "; ".join(problems))

    # ---- derived quantities -------------------------------------------------------------
    @property
    def rot_dim(self) -> int:
        return self.rope_dim if self.rope_dim is not None else self.head_dim

    @property
    def n_rep(self) -> int:
        """Query heads per kv head (GQA): query head j uses kv head j // n_rep."""
        return self.n_heads // self.n_kv_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """The ternary projections of one layer, torch order (M, K)."""
        return {
            "attn_q": (self.q_dim, self.hidden),
            "attn_k": (self.kv_dim, self.hidden),
            "attn_v": (self.kv_dim, self.hidden),
            "attn_output": (self.hidden, self.q_dim),
            "ffn_gate": (self.ffn, self.hidden),
            "ffn_up": (self.ffn, self.hidden),
            "ffn_down": (self.hidden, self.ffn),
        }

    # ---- the tensors a file holds ------------------------------------------------------
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a model of this config has, GGUF names, torch order (M, K). Build it only
        for a config whose ``n_layers`` was checked against a file (``check_tensors``)."""
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (self.vocab, self.hidden),
                                              "output_norm.weight": (self.hidden,)}
        if not self.tied_output:
            shapes["output.weight"] = (self.vocab, self.hidden)
        proj = self.projection_shapes()
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes[p + "attn_norm.weight"] = (self.hidden,)
            shapes[p + "ffn_norm.weight"] = (self.hidden,)
            if self.sub_norms:
                shapes[p + "attn_sub_norm.weight"] = (self.q_dim,)
                shapes[p + "ffn_sub_norm.weight"] = (self.ffn,)
            for short, shape in proj.items():
                shapes[f"{p}{short}.weight"] = shape
        return shapes

    def check_tensor_names(self, names: Iterable[str]) -> None:
        """The tensors a backend builds this graph from: every one of :meth:`tensor_shapes` present,
        and nothing else but the optional per-projection ``blk.N.<proj>.scale`` of the old
        ``bitnet`` arch (a ConfigError listing the first few either way). Call after
        :meth:`check_tensors`, which vouches for ``n_layers``."""
        names = set(names)
        needed = set(self.tensor_shapes())
        missing = sorted(needed - names)
        if missing:
            raise ConfigError(f"missing tensors for {self.arch} ({len(missing)}): {', '.join(missing[:8])}")
        optional = {f"blk.{i}.{p}.scale" for i in range(self.n_layers) for p in self.projection_shapes()}
        unknown = sorted(names - needed - optional)
        if unknown:
            raise ConfigError(f"tensors the {self.arch} graph does not use ({len(unknown)}): {', '.join(unknown[:8])}")

    def check_tensors(self, shapes: Mapping[str, Iterable[int]], *, keys: Mapping[str, str] | None = None) -> None:
        """Every count of this config against the tensors a file actually has (``shapes``: name ->
        torch-order shape): the layer count against the ``blk.N`` tensors present (first, so that a
        lying count never makes anyone enumerate millions of names), then the shape of each
        expected tensor that is present. ``keys`` names the file's key for a field in messages
        (e.g. ``{"n_layers": "llama.block_count"}``). Missing tensors are the backends' business."""
        keys = keys or {}

        def key(field: str) -> str:
            return keys.get(field, field)

        layers = {int(m.group(1)) for n in shapes if (m := _LAYER_RE.match(n))}
        n_have = max(layers) + 1 if layers else 0
        if self.n_layers != n_have:
            have = f"the tensors go up to blk.{n_have - 1}" if n_have else "there are no blk.N tensors"
            raise ConfigError(f"{key('n_layers')} is {self.n_layers} but {have} ({len(shapes)} tensors)")
        dims = {"token_embd.weight": f"({key('vocab')}, {key('hidden')})",
                "output.weight": f"({key('vocab')}, {key('hidden')})"}
        for name, want in self.tensor_shapes().items():
            got = shapes.get(name)
            if got is None or tuple(got) == want:
                continue
            what = dims.get(name, "the config")
            raise ConfigError(f"tensor {name!r} has shape {tuple(got)} but {what} implies {want}")

    # ---- builders -----------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any],
                  tensors: Iterable[str] | Mapping[str, Iterable[int]]) -> "ModelConfig":
        """From GGUF key/values (plain Python values) and the file's tensors: their names, or a
        mapping name -> torch-order shape, in which case every count is also checked against the
        tensors (``check_tensors``; what the loaders and ``inspect`` pass). Every value of the
        wrong type or out of range is a ConfigError naming the key and the value it holds."""
        names = set(tensors)
        arch = metadata.get("general.architecture")
        if arch not in ARCHS:
            raise ConfigError(
                f"general.architecture is {_show(arch)}; bitnet_lab reads {', '.join(ARCHS)}"
            )
        where = "GGUF metadata key"

        def raw(k: str, default: Any = None) -> tuple[str, Any]:
            full = f"{arch}.{k}"
            if full in metadata:
                return full, metadata[full]
            if default is None:
                raise ConfigError(f"GGUF metadata key {full!r} is missing")
            return full, default

        def count(k: str, default: Any = None) -> int:
            return _int_value(*raw(k, default), where=where)

        hidden = count("embedding_length")
        n_heads = count("attention.head_count")
        n_kv = count("attention.head_count_kv", n_heads)
        head_dim = count("attention.key_length", hidden // n_heads or 1) if f"{arch}.attention.key_length" in metadata \
            else hidden // n_heads
        if head_dim <= 0:
            raise ConfigError(f"{where} {arch}.embedding_length {hidden} is smaller than "
                              f"{arch}.attention.head_count {n_heads}: a head would have no dimensions")
        rope_key = f"{arch}.rope.dimension_count"
        rope_dim = _int_value(rope_key, metadata[rope_key], where=where) if rope_key in metadata else None
        vocab_key = f"{arch}.vocab_size"
        if vocab_key in metadata:
            vocab = _int_value(vocab_key, metadata[vocab_key], where=where)
        else:
            tokens = metadata.get("tokenizer.ggml.tokens")
            if tokens is None:
                raise ConfigError(f"neither {vocab_key} nor tokenizer.ggml.tokens gives the vocabulary size")
            if not isinstance(tokens, (list, tuple)):
                raise ConfigError(f"{where} 'tokenizer.ggml.tokens' is {_show(tokens)}; expected an array of strings")
            vocab = _int_value("tokenizer.ggml.tokens (its length)", len(tokens), where=where)
        sub_norms = "blk.0.attn_sub_norm.weight" in names and "blk.0.ffn_sub_norm.weight" in names
        tied = "output.weight" not in names
        general_name = metadata.get("general.name", "")
        config = cls(
            arch=arch,
            hidden=hidden,
            n_layers=count("block_count"),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=head_dim,
            ffn=count("feed_forward_length"),
            vocab=vocab,
            context=count("context_length", 2048),
            rope_theta=_float_value(*raw("rope.freq_base", 10000.0), where=where),
            rope_style="norm" if arch == "llama" else "neox",
            norm_eps=_float_value(*raw("attention.layer_norm_rms_epsilon", 1e-5), where=where),
            activation=_activation_from_gguf(arch, metadata, sub_norms),
            sub_norms=sub_norms,
            tied_output=tied,
            rope_dim=rope_dim if rope_dim is not None and rope_dim != head_dim else None,
            bos_id=_opt_id(metadata, "tokenizer.ggml.bos_token_id", where),
            eos_id=_opt_id(metadata, "tokenizer.ggml.eos_token_id", where),
            eot_id=_opt_id(metadata, "tokenizer.ggml.eot_token_id", where),
            pad_id=_opt_id(metadata, "tokenizer.ggml.padding_token_id", where),
            name=general_name if isinstance(general_name, str) else str(general_name)[:200],
        )
        if isinstance(tensors, Mapping):
            keys = {"n_layers": f"{arch}.block_count", "vocab": vocab_key if vocab_key in metadata
                    else "the vocabulary size (tokenizer.ggml.tokens)", "hidden": f"{arch}.embedding_length"}
            config.check_tensors(tensors, keys=keys)
        return config

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any] | str | Path) -> "ModelConfig":
        """From a Hugging Face config.json (dict or path). llama-arch models get ``rope_style
        'norm'`` because our HF reader permutes q/k rows exactly as the GGUF converters do
        (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs), so both readers yield identical tensors."""
        if isinstance(cfg, (str, Path)):
            try:
                cfg = json.loads(Path(cfg).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"cannot read config.json {cfg}: {e}") from e
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"config.json holds a {type(cfg).__name__}, not an object")
        try:
            return cls._from_hf_mapping(cfg)
        except ConfigError:
            raise
        except (TypeError, ValueError, ArithmeticError, AttributeError) as e:
            raise ConfigError(f"config.json has an unusable value: {type(e).__name__}: {e}") from None

    @classmethod
    def _from_hf_mapping(cls, cfg: Mapping[str, Any]) -> "ModelConfig":
        where = "config.json"
        archs_raw = cfg.get("architectures") or []
        if not isinstance(archs_raw, (list, tuple)):
            raise ConfigError(f"config.json 'architectures' is {_show(archs_raw)}; expected a list of class names")
        archs = [str(a).lower() for a in archs_raw]
        model_type = cfg.get("model_type", "")
        is_bitnet = any(a in ("bitnetforcausallm",) for a in archs) or model_type == "bitnet"

        def need(k: str) -> int:
            if k not in cfg:
                raise ConfigError(f"config.json lacks {k!r}")
            return _int_value(k, cfg[k], where=where)

        def opt_int(k: str, default: int) -> int:
            v = cfg.get(k)
            return default if v is None else _int_value(k, v, where=where)

        hidden = need("hidden_size")
        n_heads = need("num_attention_heads")
        n_layers = need("num_hidden_layers")
        ffn = need("intermediate_size")
        vocab = need("vocab_size")
        act_raw = cfg.get("hidden_act", "relu2" if model_type == "bitnet" else "silu")
        act = {"relu2": "relu2", "relu_squared": "relu2", "silu": "silu", "swish": "silu"}.get(
            act_raw.lower() if isinstance(act_raw, str) else None)
        if act is None:
            raise ConfigError(f"config.json 'hidden_act' is {_show(act_raw)}; expected relu2 or silu")
        if cfg.get("rope_theta") is not None:
            theta = _float_value("rope_theta", cfg["rope_theta"], where=where)
        else:
            params = cfg.get("rope_parameters") or {}
            if not isinstance(params, Mapping):
                raise ConfigError(f"config.json 'rope_parameters' is {_show(params)}; expected an object")
            theta = _float_value("rope_parameters.rope_theta", params.get("rope_theta", 10000.0), where=where)
        arch = "bitnet-b1.58" if is_bitnet else "llama"
        if is_bitnet and act == "silu":
            arch = "bitnet"  # the 1bitLLM family: SiLU + sub-norms
        tied = bool(cfg.get("tie_word_embeddings", is_bitnet))
        eos = cfg.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        head_dim = opt_int("head_dim", hidden // n_heads) if cfg.get("head_dim") else hidden // n_heads
        if head_dim <= 0:
            raise ConfigError(f"config.json 'hidden_size' {hidden} is smaller than "
                              f"'num_attention_heads' {n_heads}: a head would have no dimensions")
        eps = cfg.get("rms_norm_eps")
        name = cfg.get("_name_or_path", "")
        return cls(
            arch=arch,
            hidden=hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=opt_int("num_key_value_heads", n_heads) if cfg.get("num_key_value_heads") else n_heads,
            head_dim=head_dim,
            ffn=ffn,
            vocab=vocab,
            context=opt_int("max_position_embeddings", 2048) if cfg.get("max_position_embeddings") else 2048,
            rope_theta=theta,
            rope_style="neox" if is_bitnet else "norm",
            norm_eps=1e-5 if eps is None else _float_value("rms_norm_eps", eps, where=where),
            activation=act,
            sub_norms=is_bitnet,
            tied_output=tied,
            bos_id=_opt_id(cfg, "bos_token_id", where),
            eos_id=_opt_id({"eos_token_id": eos}, "eos_token_id", where),
            pad_id=_opt_id(cfg, "pad_token_id", where),
            name=name if isinstance(name, str) else str(name)[:200],
        )

    def gguf_metadata(self) -> dict[str, Any]:
        """The architecture keys a GGUF writer stores for this config (docs/formats.md#52-key-catalogue),
        plus our explicit activation key. Tokenizer keys are the tokenizer's business."""
        a = self.arch
        md: dict[str, Any] = {
            "general.architecture": a,
            "general.name": self.name or "bitnet_lab model",
            f"{a}.vocab_size": self.vocab,
            f"{a}.context_length": self.context,
            f"{a}.embedding_length": self.hidden,
            f"{a}.block_count": self.n_layers,
            f"{a}.feed_forward_length": self.ffn,
            f"{a}.rope.dimension_count": self.rot_dim,
            f"{a}.rope.freq_base": float(self.rope_theta),
            f"{a}.attention.head_count": self.n_heads,
            f"{a}.attention.head_count_kv": self.n_kv_heads,
            f"{a}.attention.layer_norm_rms_epsilon": float(self.norm_eps),
            ACTIVATION_KEY: self.activation,
        }
        if self.head_dim != self.hidden // self.n_heads:
            md[f"{a}.attention.key_length"] = self.head_dim
            md[f"{a}.attention.value_length"] = self.head_dim
        return md


def _show(v: Any) -> str:
    """A value for an error message: short, whatever it is (a 100k-entry list stays one line)."""
    if isinstance(v, (list, tuple, dict)):
        return f"a {type(v).__name__} of {len(v)} item(s)" + (f" ({_show(v[0])}, …)" if isinstance(v, (list, tuple)) and v else "")
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _int_value(key: str, v: Any, *, where: str, minimum: int = 1) -> int:
    """``v`` as an integer in ``minimum``..MAX_DIM (an integral float is accepted), else a
    ConfigError naming ``key`` and the value it holds."""
    shown = _show(v)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where} {key!r} is {shown}; expected an integer")
    if not minimum <= v <= MAX_DIM:
        raise ConfigError(f"{where} {key!r} is {shown}; expected an integer in {minimum}..{MAX_DIM}")
    return v


def _float_value(key: str, v: Any, *, where: str) -> float:
    """``v`` as a finite float > 0, else a ConfigError naming ``key`` and the value it holds."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where} {key!r} is {_show(v)}; expected a number")
    f = float(v) if not isinstance(v, int) or abs(v) < 2**1023 else math.inf
    if not (math.isfinite(f) and f > 0):
        raise ConfigError(f"{where} {key!r} is {_show(v)}; expected a finite number > 0")
    return f


def _opt_id(mapping: Mapping[str, Any], key: str, where: str) -> int | None:
    """An optional special-token id: absent/None or negative (HF's "none", e.g. pad -1) -> None;
    an integer up to MAX_DIM -> itself; anything else -> ConfigError naming the key."""
    v = mapping.get(key)
    if v is None:
        return None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v > MAX_DIM:
        raise ConfigError(f"{where} {key!r} is {_show(v)}; expected a token id (an integer)")
    return v if v >= 0 else None


def _activation_from_gguf(arch: str, metadata: Mapping[str, Any], sub_norms: bool) -> str:
    """docs/formats.md#51-architecture-strings: an explicit key wins; `bitnet` and `llama` are SiLU;
    `bitnet-25` is the 2B-4T (ReLU²); `bitnet-b1.58` is ReLU² unless the vocabulary is SentencePiece (the
    1bitLLM models relabelled by the current converter)."""
    key = ACTIVATION_KEY if metadata.get(ACTIVATION_KEY) else f"{arch}.hidden_act"
    explicit = metadata.get(key)
    if explicit is not None:
        v = explicit.lower() if isinstance(explicit, str) else None
        v = {"relu_squared": "relu2", "swish": "silu"}.get(v, v)
        if v not in ACTIVATIONS:
            raise ConfigError(f"GGUF metadata key {key!r} is {_show(explicit)}; expected relu2 or silu")
        return v
    if arch in ("bitnet", "llama"):
        return "silu"
    if arch == "bitnet-25":
        return "relu2"
    if metadata.get("tokenizer.ggml.model") == "llama" or not sub_norms:
        return "silu"
    return "relu2"
