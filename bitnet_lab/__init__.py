"""bitnet_lab: a research workbench for BitNet b1.58 ternary LLM inference on CPU.

``import bitnet_lab`` stays light: JAX, matplotlib and ipywidgets are imported only by the
modules that need them. The public surface (docs/design.md#the-public-surface):

    model = bitnet_lab.load()                      # the embedded default model
    model = bitnet_lab.load(path_or_repo_id, backend=..., threads=...)
    bitnet_lab.kernels.available_isas()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import (
    BitnetLabError,
    CodecError,
    ConfigError,
    FormatError,
    GGUFError,
    HubError,
    KernelError,
    SafetensorsError,
    UnsupportedTypeError,
)

from bitnet_lab._version import __version__

__all__ = [
    "load",
    "ModelConfig",
    "BitnetLabError",
    "CodecError",
    "ConfigError",
    "FormatError",
    "GGUFError",
    "HubError",
    "KernelError",
    "SafetensorsError",
    "UnsupportedTypeError",
    "kernels",
    "bench",
    "verify",
    "Tokenizer",
    "__version__",
]

DEFAULT_MODEL = "default"


def load(source: Any = None, **kwargs: Any) -> Any:
    """Load a model: ``load()`` or ``load("default")`` is the embedded default model (what the
    CLI runs without ``-m``); otherwise a .gguf file, a Hugging Face checkpoint folder or a Hub
    repo id (``./default`` reaches a local file of that name). Keywords as
    `bitnet_lab.model.load` (backend=, threads=, mmap=, revision=, filename=, ...)."""
    from bitnet_lab.model import load as load_model
    from bitnet_lab.tools.default_model import default_model_path

    if source is None or (isinstance(source, str) and source == DEFAULT_MODEL):
        source = default_model_path()
    return load_model(source, **kwargs)


_LAZY = {
    "Model": ("bitnet_lab.model", "Model"),
    "Tokenizer": ("bitnet_lab.tokenizer", "Tokenizer"),
    "kernels": ("bitnet_lab.kernels", None),
    # callable modules: bitnet_lab.bench(...) / bitnet_lab.verify(...) (see _callable.py)
    "bench": ("bitnet_lab.bench", None),
    "verify": ("bitnet_lab.verify", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod_name, attr = _LAZY[name]
        mod = importlib.import_module(mod_name)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'bitnet_lab' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from bitnet_lab import kernels  # noqa: F401
    from bitnet_lab.model import Model  # noqa: F401
