"""The embedded default model: what ``run``, ``chat`` and the notebooks use when no ``-m`` is given.

``default_model_path()`` returns ``data/default-model.gguf`` when the package ships one (a later
issue puts a small trained model there). Until then it returns a dummy of the ``tiny`` layout
(seed 0, I2_S, the Llama-2 SentencePiece vocabulary), generated on first use into
``bitnet_lab.paths.CACHE_DIR`` in well under a second and regenerated when the file is missing
or was written by another generator version (metadata ``bitnet_lab.tools.dummy.generator_version``).
Its text is junk — random weights — but every code path runs on it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bitnet_lab import paths
from bitnet_lab.errors import BitnetLabError

DEFAULT_LAYOUT = "tiny"
DEFAULT_OUTTYPE = "i2_s"
DEFAULT_SEED = 0
SHIPPED_NAME = "default-model.gguf"


def shipped_model_path() -> Path:
    """Where a shipped default model lives (it may not exist)."""
    return paths.DATA_DIR / SHIPPED_NAME


def cached_model_path() -> Path:
    """Where the generated stand-in lives (one stable name: a new generator version overwrites it)."""
    return paths.CACHE_DIR / f"default-{DEFAULT_LAYOUT}-{DEFAULT_OUTTYPE}-seed{DEFAULT_SEED}.gguf"


def _is_current(path: Path) -> bool:
    """True when ``path`` is a complete dummy written by this generator version."""
    from bitnet_lab.tools.dummy import DUMMY_VERSION_KEY, GENERATOR_VERSION
    from bitnet_lab.formats.gguf import read_metadata

    if not path.is_file():
        return False
    try:
        md = read_metadata(path)
    except BitnetLabError:
        return False  # truncated or foreign: regenerate
    return md.get(DUMMY_VERSION_KEY) == GENERATOR_VERSION


def default_model_path(*, progress: bool = False) -> Path:
    """The default model file: the shipped one, else the cached tiny dummy (generated if needed)."""
    shipped = shipped_model_path()
    if shipped.is_file():
        return shipped
    target = cached_model_path()
    if _is_current(target):
        return target
    from bitnet_lab.tools.dummy import generate_dummy

    target.parent.mkdir(parents=True, exist_ok=True)
    # Generate under a unique name in the same folder, then rename: concurrent first uses never
    # see a half-written file, and the last rename wins with identical bytes.
    fd, tmp_name = tempfile.mkstemp(prefix=".default-model-", suffix=".gguf", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        generate_dummy(DEFAULT_LAYOUT, tmp, outtype=DEFAULT_OUTTYPE, seed=DEFAULT_SEED, progress=progress)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
