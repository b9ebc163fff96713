"""Where the project's shipped data lives (vocabularies, the embedded default model).

The repository's top-level ``data/`` is the package ``bitnet_lab.data`` (mapped by the build:
pyproject.toml's package-dir and package-data), so ``importlib.resources`` finds it the same
way in an editable install from the checkout and in an installed wheel. ``BITNET_LAB_DATA``
points elsewhere when set; ``BITNET_LAB_CACHE`` moves the cache.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def _shipped_data_dir() -> Path:
    """The directory of the package ``bitnet_lab.data`` (the checkout's or the wheel's data/)."""
    try:
        root = resources.files("bitnet_lab.data")
    except ModuleNotFoundError:
        # An editable install made before data/ became bitnet_lab.data (its import hook does
        # not know the package yet; `pip install -e .` again fixes that): the checkout's data/.
        checkout = Path(__file__).resolve().parent.parent / "data"
        if (checkout / "__init__.py").is_file():
            return checkout
        raise
    if not isinstance(root, Path):  # e.g. a zip import: the files must be on disk (memory-mapped)
        raise RuntimeError(f"bitnet_lab's data is not on the file system ({root!r}); install the wheel unpacked")
    return root


DATA_DIR = Path(os.environ["BITNET_LAB_DATA"]) if os.environ.get("BITNET_LAB_DATA") else _shipped_data_dir()
VOCAB_DIR = DATA_DIR / "vocab"
LLAMA3_VOCAB = VOCAB_DIR / "ggml-vocab-llama-bpe.gguf"   # Llama-3 byte-level BPE, 128256 tokens
LLAMA2_VOCAB = VOCAB_DIR / "ggml-vocab-llama-spm.gguf"   # Llama-2 SentencePiece, 32000 tokens
CACHE_DIR = Path(os.environ.get("BITNET_LAB_CACHE", Path.home() / ".cache" / "bitnet_lab"))
