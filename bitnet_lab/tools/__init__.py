"""Tools around models: dummy models of real layouts, conversion, inspection, the default model, tiny test models.

``layouts`` (named real-model shapes), ``dummy`` (random models of those layouts), ``convert`` (HF checkpoint
→ GGUF), ``inspect`` (a file's metadata, tensors and ternary statistics), ``default_model`` (the embedded
model), ``testing`` (tiny deterministic models for tests and notebooks).
"""
