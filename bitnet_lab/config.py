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
            if not isinstance(v, int) or v <= 0:
                problems.append(f"{f} must be a positive integer, got {v!r}")
        if not problems:
            if self.n_heads % self.n_kv_heads:
                problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
            if self.rot_dim > self.head_dim or self.rot_dim % 2:
                problems.append(f"rope_dim {self.rot_dim} must be even and <= head_dim {self.head_dim}")
        if not (self.norm_eps > 0) or not (self.rope_theta > 0):
            problems.append(f"norm_eps ({self.norm_eps}) and rope_theta ({self.rope_theta}) must be > 0")
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

    # ---- builders -----------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any], tensor_names: Iterable[str]) -> "ModelConfig":
        """From GGUF key/values (plain Python values) and the tensor names of the file."""
        names = set(tensor_names)
        arch = metadata.get("general.architecture")
        if arch not in ARCHS:
            raise ConfigError(
                f"general.architecture is {arch!r}; bitnet_lab reads {', '.join(ARCHS)}"
            )

        def key(k: str, default: Any = None, required: bool = True) -> Any:
            full = f"{arch}.{k}"
            if full in metadata:
                return metadata[full]
            if required and default is None:
                raise ConfigError(f"GGUF metadata key {full!r} is missing")
            return default

        hidden = int(key("embedding_length"))
        n_heads = int(key("attention.head_count"))
        n_kv = int(key("attention.head_count_kv", n_heads, required=False))
        head_dim = int(key("attention.key_length", 0, required=False)) or (hidden // n_heads if n_heads else 0)
        rope_dim = key("rope.dimension_count", None, required=False)
        vocab = key("vocab_size", None, required=False)
        if vocab is None:
            tokens = metadata.get("tokenizer.ggml.tokens")
            vocab = len(tokens) if tokens is not None else None
        if vocab is None:
            raise ConfigError(f"neither {arch}.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size")
        sub_norms = "blk.0.attn_sub_norm.weight" in names and "blk.0.ffn_sub_norm.weight" in names
        tied = "output.weight" not in names
        return cls(
            arch=arch,
            hidden=hidden,
            n_layers=int(key("block_count")),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=head_dim,
            ffn=int(key("feed_forward_length")),
            vocab=int(vocab),
            context=int(key("context_length", 2048, required=False)),
            rope_theta=float(key("rope.freq_base", 10000.0, required=False)),
            rope_style="norm" if arch == "llama" else "neox",
            norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5, required=False)),
            activation=_activation_from_gguf(arch, metadata, sub_norms),
            sub_norms=sub_norms,
            tied_output=tied,
            rope_dim=int(rope_dim) if rope_dim is not None and int(rope_dim) != head_dim else None,
            bos_id=_opt_int(metadata.get("tokenizer.ggml.bos_token_id")),
            eos_id=_opt_int(metadata.get("tokenizer.ggml.eos_token_id")),
            eot_id=_opt_int(metadata.get("tokenizer.ggml.eot_token_id")),
            pad_id=_opt_int(metadata.get("tokenizer.ggml.padding_token_id")),
            name=str(metadata.get("general.name", "")),
        )

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
        archs = [str(a).lower() for a in cfg.get("architectures") or []]
        model_type = cfg.get("model_type", "")
        is_bitnet = any(a in ("bitnetforcausallm",) for a in archs) or model_type == "bitnet"
        try:
            hidden = int(cfg["hidden_size"])
            n_heads = int(cfg["num_attention_heads"])
            n_layers = int(cfg["num_hidden_layers"])
            ffn = int(cfg["intermediate_size"])
            vocab = int(cfg["vocab_size"])
        except KeyError as e:
            raise ConfigError(f"config.json lacks {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.json has a non-integer dimension: {e}") from e
        act = str(cfg.get("hidden_act", "relu2" if model_type == "bitnet" else "silu")).lower()
        act = {"relu2": "relu2", "relu_squared": "relu2", "silu": "silu", "swish": "silu"}.get(act)
        if act is None:
            raise ConfigError(f"config.json hidden_act {cfg.get('hidden_act')!r} is neither relu2 nor silu")
        theta = cfg.get("rope_theta")
        if theta is None:
            theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        arch = "bitnet-b1.58" if is_bitnet else "llama"
        if is_bitnet and act == "silu":
            arch = "bitnet"  # the 1bitLLM family: SiLU + sub-norms
        tied = bool(cfg.get("tie_word_embeddings", is_bitnet))
        eos = cfg.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        if n_heads <= 0:
            raise ConfigError(f"config.json num_attention_heads is {n_heads}; it must be positive")
        head_dim = cfg.get("head_dim") or hidden // n_heads
        return cls(
            arch=arch,
            hidden=hidden,
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            head_dim=int(head_dim),
            ffn=ffn,
            vocab=vocab,
            context=int(cfg.get("max_position_embeddings") or 2048),
            rope_theta=float(theta),
            rope_style="neox" if is_bitnet else "norm",
            norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            activation=act,
            sub_norms=is_bitnet,
            tied_output=tied,
            bos_id=_opt_int(cfg.get("bos_token_id")),
            eos_id=_opt_int(eos),
            pad_id=_opt_int(cfg.get("pad_token_id")),
            name=str(cfg.get("_name_or_path", "")),
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


def _opt_int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _activation_from_gguf(arch: str, metadata: Mapping[str, Any], sub_norms: bool) -> str:
    """docs/formats.md#51-architecture-strings: an explicit key wins; `bitnet` and `llama` are SiLU;
    `bitnet-25` is the 2B-4T (ReLU²); `bitnet-b1.58` is ReLU² unless the vocabulary is SentencePiece (the
    1bitLLM models relabelled by the current converter)."""
    explicit = metadata.get(ACTIVATION_KEY) or metadata.get(f"{arch}.hidden_act")
    if explicit is not None:
        v = str(explicit).lower()
        v = {"relu_squared": "relu2", "swish": "silu"}.get(v, v)
        if v not in ACTIVATIONS:
            raise ConfigError(f"activation key says {explicit!r}; expected relu2 or silu")
        return v
    if arch in ("bitnet", "llama"):
        return "silu"
    if arch == "bitnet-25":
        return "relu2"
    if metadata.get("tokenizer.ggml.model") == "llama" or not sub_norms:
        return "silu"
    return "relu2"
