"""Where the project's shipped data lives (vocabularies, the embedded default model).

The package is installed editable from its checkout (README), so ``data/`` sits next to the
package directory; ``BITNET_LAB_DATA`` points elsewhere when needed.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("BITNET_LAB_DATA", Path(__file__).resolve().parent.parent / "data"))
VOCAB_DIR = DATA_DIR / "vocab"
LLAMA3_VOCAB = VOCAB_DIR / "ggml-vocab-llama-bpe.gguf"   # Llama-3 byte-level BPE, 128256 tokens
LLAMA2_VOCAB = VOCAB_DIR / "ggml-vocab-llama-spm.gguf"   # Llama-2 SentencePiece, 32000 tokens
CACHE_DIR = Path(os.environ.get("BITNET_LAB_CACHE", Path.home() / ".cache" / "bitnet_lab"))
