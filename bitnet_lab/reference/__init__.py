"""The JAX reference model: the whole forward pass, integer-exact where the math is integer.

This package is the only part of bitnet_lab that imports JAX. See ``model.py`` for the forward
interface and the capture names, ``layers.py`` for the arithmetic of each block.
"""

from bitnet_lab.reference.model import DEFAULT_BUCKETS, KVCache, ReferenceModel

__all__ = ["ReferenceModel", "KVCache", "DEFAULT_BUCKETS"]
