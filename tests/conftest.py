"""Fixtures shared by the test packages (one copy each), and the test helpers' import path.

The helper modules beside this file (fakes_generate, gguf_builder, plain_model, _hf_models) are
imported by name from every test package: pytest puts this folder on sys.path for conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """The `tiny` dummy layout as an I2_S GGUF (seed 0): a complete model in ~100 KB, written once.

    Shared by every test that only reads it; a test that changes a model file makes its own."""
    from bitnet_lab.tools.dummy import generate_dummy

    return generate_dummy("tiny", tmp_path_factory.mktemp("tiny") / "tiny.gguf", progress=False)
