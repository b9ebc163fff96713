"""The native engine: the whole forward pass in one C call over the packed ternary weights.

``weights`` (checks and layout choices made once at load), ``native`` (:class:`NativeEngine`,
the KV cache), ``profile`` (a decode step's per-op timings), ``residency`` (where the bytes live:
mapped, copied, huge pages, lazily committed).
"""

from __future__ import annotations

from bitnet_lab.engine.native import NativeCache, NativeEngine
from bitnet_lab.engine.profile import DecodeProfile
from bitnet_lab.engine.weights import (
    ENGINE_CHUNK,
    I2S_LAYOUTS,
    KV_DTYPES,
    LM_HEAD_DTYPES,
    PROF_CLASSES,
    PROJECTIONS,
    rope_tables,
    x4_repacked_names,
)

__all__ = ["ENGINE_CHUNK", "I2S_LAYOUTS", "KV_DTYPES", "LM_HEAD_DTYPES", "PROF_CLASSES", "PROJECTIONS", "DecodeProfile",
           "NativeCache", "NativeEngine", "rope_tables", "x4_repacked_names"]
