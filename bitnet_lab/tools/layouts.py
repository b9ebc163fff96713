"""Named model layouts: the shapes of every family bitnet_lab knows, as `ModelConfig`s.

A *layout* is everything needed to fabricate a model of a family without its weights:
hyper-parameters (a `ModelConfig`), which tokenizer vocabulary to embed, the chat template,
and the size of the weights a trained model of that family has (per-tensor ternary scale γ,
embedding σ). `bitnet_lab.tools.dummy` turns a layout into a complete GGUF file.

Sources (docs/formats.md):
- bitnet.cpp's dummy sizes: docs/formats.md#9-dummy-model-layouts (arch ``bitnet``, MHA, vocab 32002, SiLU;
  the hparams not in the size table — context 2048, θ 10000, ε 1e-5 — come from the bitnet_b1_58-large
  config.json the generator is pointed at);
- the real families: docs/formats.md#61-hyper-parameters (hyper-parameters),
  docs/formats.md#53-the-official-2b-4t-gguf (the 2B-4T file), docs/formats.md#8-tokenizer-metadata
  (tokenizers).

Names are case-insensitive: ``layout_config("2b-4t")`` works.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError

# Vocabulary sources (bitnet_lab/paths.py): which llama.cpp vocab GGUF the tokenizer keys come
# from. A layout whose vocab size differs from the source's is padded with extra tokens.
VOCAB_LLAMA3 = "llama3"  # Llama-3 byte-level BPE, 128256 tokens (gpt2 tokenizer model)
VOCAB_LLAMA2 = "llama2"  # Llama-2 SentencePiece, 32000 tokens (llama tokenizer model)
VOCAB_SIZES = {VOCAB_LLAMA3: 128256, VOCAB_LLAMA2: 32000}

# The 2B-4T training-format chat template (docs/formats.md#85-chat-templates): "Role: content<|eot_id|>" per
# message, Role capitalised and content trimmed, no newlines between turns, generation prompt
# "Assistant: " (trailing space), BOS first. Written as Jinja for HF-style renderers; our own
# chat code builds the same sequence token by token.
CHAT_TEMPLATE_2B4T = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)

# Per-tensor ternary scale γ of a trained model (the value a ±1 weight stands for):
# docs/formats.md#74-weight_scale-multiply-or-divide: the 2B-4T's effective scale is O(1), ≈ 1.5;
# Llama-style weight_scale 50–400 is 1/γ.
GAMMA_2B4T = (1.0, 2.0)
GAMMA_LLAMA = (1 / 400, 1 / 50)
GAMMA_LATENT = (0.01, 0.05)    # [inferred] mean|W| of latent fp weights initialised at σ ≈ 0.02–0.06


@dataclass(frozen=True)
class Layout:
    """A named model shape: config plus what a dummy of it needs to look trained."""

    name: str
    family: str                      # human-readable family, e.g. "BitNet-b1.58-2B-4T"
    config: ModelConfig
    vocab_source: str                # VOCAB_LLAMA3 | VOCAB_LLAMA2
    gamma_range: tuple[float, float]  # per-tensor γ is drawn log-uniformly in this range
    embed_sigma: float               # token embedding ~ N(0, σ)
    chat_template: str | None = None
    rope_scaling_linear: bool = False  # bitnet.cpp's dummy generator writes rope.scaling linear 1.0
    notes: str = ""

    @property
    def n_extra_tokens(self) -> int:
        """Tokens appended to the source vocabulary to reach ``config.vocab``
        (docs/formats.md#9-dummy-model-layouts, docs/formats.md#61-hyper-parameters)."""
        return self.config.vocab - VOCAB_SIZES[self.vocab_source]

    def ternary_params(self) -> int:
        c = self.config
        return c.n_layers * sum(m * k for m, k in c.projection_shapes().values())


def _dummy_name(size: str) -> str:
    return f"bitnet_lab dummy {size}"


def _bitnet_cpp_dummy(size: str, hidden: int, ffn: int, layers: int, heads: int) -> Layout:
    """One row of bitnet.cpp's dummy table (docs/formats.md#9-dummy-model-layouts): arch `bitnet`, MHA, SiLU,
    32002."""
    cfg = ModelConfig(
        arch="bitnet",
        hidden=hidden,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=heads,            # MHA: attn_k / attn_v are H × H
        head_dim=hidden // heads,
        ffn=ffn,
        vocab=32002,
        context=2048,
        rope_theta=10000.0,
        rope_style="neox",
        norm_eps=1e-5,
        activation="silu",
        sub_norms=True,
        tied_output=True,
        bos_id=1,
        eos_id=2,
        pad_id=32000,
        name=_dummy_name(size),
    )
    return Layout(
        name=size,
        family="bitnet.cpp dummy",
        config=cfg,
        vocab_source=VOCAB_LLAMA2,
        gamma_range=GAMMA_LATENT,
        embed_sigma=0.02,
        rope_scaling_linear=True,
        notes="BitNet:utils/generate-dummy-bitnet-model.py size table",
    )


def _one_bit_llm(name: str, hidden: int, ffn: int, layers: int, heads: int, family: str) -> Layout:
    """1bitLLM bitnet_b1_58-large / -3B (docs/formats.md#61-hyper-parameters,
    docs/formats.md#64-1bitllm-large-and-3b-gguf-tensors): SiLU, sub-norms, tied, 32002."""
    cfg = ModelConfig(
        arch="bitnet",
        hidden=hidden,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=heads,
        head_dim=hidden // heads,
        ffn=ffn,
        vocab=32002,
        context=2048,
        rope_theta=10000.0,
        rope_style="neox",
        norm_eps=1e-5,
        activation="silu",
        sub_norms=True,
        tied_output=True,
        bos_id=1,
        eos_id=2,
        pad_id=32000,
        name=_dummy_name(name),
    )
    return Layout(
        name=name,
        family=family,
        config=cfg,
        vocab_source=VOCAB_LLAMA2,
        gamma_range=GAMMA_LATENT,
        embed_sigma=0.03,
    )


def _llama_family(
    name: str, family: str, *, hidden: int, layers: int, heads: int, kv: int, head_dim: int,
    ffn: int, vocab: int, context: int, theta: float, eps: float, notes: str = "",
) -> Layout:
    """Llama-architecture 1.58-bit fine-tunes (docs/formats.md#65-llama-architecture-families): SiLU, no
    sub-norms, untied."""
    cfg = ModelConfig(
        arch="llama",
        hidden=hidden,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv,
        head_dim=head_dim,
        ffn=ffn,
        vocab=vocab,
        context=context,
        rope_theta=theta,
        # llama-arch GGUF q/k rows are permuted (docs/formats.md#76-qk-permutation-for-llama-arch-ggufs)
        rope_style="norm",
        norm_eps=eps,
        activation="silu",
        sub_norms=False,
        tied_output=False,
        bos_id=128000,
        eos_id=128001,
        eot_id=128009,
        name=_dummy_name(name),
    )
    return Layout(
        name=name,
        family=family,
        config=cfg,
        vocab_source=VOCAB_LLAMA3,
        gamma_range=GAMMA_LLAMA,
        embed_sigma=0.02,
        notes=notes,
    )


def _build_layouts() -> dict[str, Layout]:
    layouts: list[Layout] = []

    # -- the embedded test/default model: small, fast, the 2B-4T's graph (ReLU², sub-norms, GQA)
    layouts.append(
        Layout(
            name="tiny",
            family="bitnet_lab tiny (2B-4T graph)",
            config=ModelConfig(
                arch="bitnet-b1.58",
                hidden=256,
                n_layers=4,
                n_heads=4,
                n_kv_heads=2,
                head_dim=64,
                ffn=768,
                vocab=32000,
                context=2048,
                rope_theta=10000.0,
                rope_style="neox",
                norm_eps=1e-5,
                activation="relu2",
                sub_norms=True,
                tied_output=True,
                bos_id=1,
                eos_id=2,
                name=_dummy_name("tiny"),
            ),
            vocab_source=VOCAB_LLAMA2,
            gamma_range=GAMMA_2B4T,
            embed_sigma=0.03,
            notes="hidden 256, 4 layers, heads 4 / kv 2, ffn 768; every dim a multiple of 128 "
            "(I2_S) and of 256 where TQ needs it",
        )
    )

    # -- bitnet.cpp's dummy sizes (docs/formats.md#9-dummy-model-layouts)
    for size, h, i, n_l, n_h in (
        ("125M", 768, 3072, 11, 12),
        ("350M", 1024, 3072, 24, 16),
        ("1B", 2048, 3584, 24, 32),
        ("1.5B", 1536, 9216, 28, 32),
        ("2.7B", 3072, 7680, 24, 32),
        ("3.8B", 3840, 8192, 24, 32),
        ("7B", 4096, 12032, 32, 32),
        ("13B", 5120, 13824, 40, 40),
        ("30B", 6656, 16384, 60, 52),
        ("70B", 8192, 24576, 80, 64),
        ("100B", 8192, 45568, 72, 64),
    ):
        layouts.append(_bitnet_cpp_dummy(size, h, i, n_l, n_h))

    # -- BitNet-b1.58-2B-4T (docs/formats.md#53-the-official-2b-4t-gguf, docs/formats.md#61-hyper-parameters,
    # docs/formats.md#63-2b-4t-gguf-tensors)
    layouts.append(
        Layout(
            name="2B-4T",
            family="BitNet-b1.58-2B-4T",
            config=ModelConfig(
                arch="bitnet-b1.58",
                hidden=2560,
                n_layers=30,
                n_heads=20,
                n_kv_heads=5,
                head_dim=128,
                ffn=6912,
                vocab=128256,
                context=4096,
                rope_theta=500000.0,
                rope_style="neox",
                norm_eps=1e-5,
                activation="relu2",
                sub_norms=True,
                tied_output=True,
                bos_id=128000,
                eos_id=128001,
                eot_id=128009,
                name=_dummy_name("2B-4T"),
            ),
            vocab_source=VOCAB_LLAMA3,
            gamma_range=GAMMA_2B4T,
            embed_sigma=0.03,
            chat_template=CHAT_TEMPLATE_2B4T,
        )
    )

    # -- 1bitLLM (docs/formats.md#61-hyper-parameters, docs/formats.md#64-1bitllm-large-and-3b-gguf-tensors)
    layouts.append(_one_bit_llm("large", 1536, 4096, 24, 16, "1bitLLM/bitnet_b1_58-large (0.7B)"))
    layouts.append(_one_bit_llm("3B", 3200, 8640, 26, 32, "1bitLLM/bitnet_b1_58-3B (3.3B)"))

    # -- Llama-architecture families (docs/formats.md#61-hyper-parameters,
    # docs/formats.md#65-llama-architecture-families)
    layouts.append(
        _llama_family(
            "Llama3-8B-1.58", "HF1BitLLM/Llama3-8B-1.58-100B-tokens",
            hidden=4096, layers=32, heads=32, kv=8, head_dim=128, ffn=14336, vocab=128256,
            context=8192, theta=500000.0, eps=1e-5,
        )
    )
    # Falcon3: the real files use Falcon3's own 131072-token BPE; we embed the Llama-3 vocab
    # padded to 131072 (said in general.description). Context lengths are [check against the
    # real file]: docs/formats.md#61-hyper-parameters leaves them open.
    falcon_note = "Llama-3 vocabulary padded to 131072 stands in for Falcon3's own tokenizer"
    layouts.append(
        _llama_family(
            "Falcon3-1B", "tiiuae/Falcon3-1B-Instruct-1.58bit",
            hidden=2048, layers=18, heads=8, kv=4, head_dim=256, ffn=8192, vocab=131072,
            context=8192, theta=1000042.0, eps=1e-6, notes=falcon_note,
        )
    )
    layouts.append(
        _llama_family(
            "Falcon3-3B", "tiiuae/Falcon3-3B-Instruct-1.58bit",
            hidden=3072, layers=22, heads=12, kv=4, head_dim=256, ffn=9216, vocab=131072,
            context=32768, theta=1000042.0, eps=1e-6, notes=falcon_note,
        )
    )
    return {lay.name.lower(): lay for lay in layouts}


LAYOUTS: dict[str, Layout] = _build_layouts()
LAYOUT_NAMES: tuple[str, ...] = tuple(lay.name for lay in LAYOUTS.values())


def get_layout(name: str | Layout) -> Layout:
    """The layout called ``name`` (case-insensitive); a `Layout` is returned as is."""
    if isinstance(name, Layout):
        return name
    lay = LAYOUTS.get(str(name).strip().lower())
    if lay is None:
        raise ConfigError(f"unknown layout {name!r}; known layouts: {', '.join(LAYOUT_NAMES)}")
    return lay


def layout_config(name: str | Layout) -> ModelConfig:
    """The `ModelConfig` of the layout called ``name`` (case-insensitive)."""
    return get_layout(name).config


def layouts_table() -> str:
    """A readable table of every layout (``bitnet-lab dummy --list``)."""
    head = f"{'layout':<15} {'arch':<13} {'H':>5} {'L':>3} {'heads':>7} {'I':>6} {'vocab':>7} {'act':<5} {'ternary params':>15}  family"
    lines = [head, "-" * len(head)]
    for lay in LAYOUTS.values():
        c = lay.config
        lines.append(
            f"{lay.name:<15} {c.arch:<13} {c.hidden:>5} {c.n_layers:>3} {c.n_heads:>3}/{c.n_kv_heads:<3} "
            f"{c.ffn:>6} {c.vocab:>7} {c.activation:<5} {lay.ternary_params() / 1e9:>14.3f}B  {lay.family}"
        )
    return "\n".join(lines)
