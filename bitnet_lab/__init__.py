"""bitnet_lab: a research workbench for BitNet b1.58 ternary LLM inference on CPU.

``import bitnet_lab`` stays light: JAX, matplotlib and ipywidgets are imported only by the
modules that need them. The public surface (docs/design.md#the-public-surface):

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

__version__ = "0.1.0"

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

_LAZY = {
    "load": ("bitnet_lab.model", "load"),
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
    from bitnet_lab.model import Model, load  # noqa: F401
