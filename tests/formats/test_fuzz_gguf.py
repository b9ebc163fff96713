"""Mutation fuzzing of the GGUF reader: 10,000 mutated copies of a small valid file (byte flips,
overwritten bytes, truncation, insertion, deletion, integer fields set to extreme values).
Every case must end in a successful load (open + tensors() + decode of every tensor) or in a
BitnetLabError — never another exception, never a hang or a huge allocation.

Measured on the shared 2-core development machine (load 3-4): 17-22 s for the 10,000 cases,
about 2 ms per case, of which ~0.5 ms is opening the file and ~1 ms decoding its tensors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from gguf_builder import small_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet_lab.errors import BitnetLabError
from bitnet_lab.formats.gguf import GGUFFile
from bitnet_lab.tensors import TernaryWeight

SEED = small_model(with_tl=True).build()
N = len(SEED.data)
HEADER_END = SEED.marks["data"]  # header + metadata + tensor infos + padding
U64_FIELDS = [off for _, off, size in SEED.fields if size == 8]
U32_FIELDS = [off for _, off, size in SEED.fields if size == 4]
EXTREME_64 = [0, 1, 31, 32, 33, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 32, 2**64 - 1]
EXTREME_32 = [0, 1, 2, 4, 5, 8, 9, 12, 13, 34, 35, 36, 37, 38, 39, 40, 2**31, 2**32 - 1]

KINDS = ("flip", "set", "truncate", "insert", "delete", "u64", "u32")
# One mutation = three integers (cheap for hypothesis to draw and to shrink):
#   kind  : which of KINDS;
#   where : position (low bit: 1 = in the parsed part of the file — header, metadata, tensor
#           infos, ~15% of it — 0 = in the tensor data), truncation length, or field index;
#   what  : bit / byte / inserted bytes / delete count / new field value (bit 8 of `where`
#           picks an extreme value from EXTREME_64 / EXTREME_32 instead of `what` itself).
mutation = st.tuples(st.integers(0, len(KINDS) - 1), st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1))


def _position(where: int, n: int) -> int:
    if where & 1:
        return (where >> 1) % min(HEADER_END, n)
    return (HEADER_END + (where >> 1) % max(N - HEADER_END, 1)) % n


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind_i, where, what in ops:
        kind = KINDS[kind_i]
        if kind == "truncate":
            del b[where % (len(b) + 1):]
            continue
        if not b:
            break
        pos = _position(where, len(b))
        if kind == "flip":
            b[pos] ^= 1 << (what % 8)
        elif kind == "set":
            b[pos] = what % 256
        elif kind == "insert":
            b[pos:pos] = what.to_bytes(8, "little")[: 1 + what % 8]
        elif kind == "delete":
            del b[pos : pos + 1 + what % 12]
        else:  # overwrite an integer field (offsets refer to the unmutated layout)
            fields, extremes, size = (U64_FIELDS, EXTREME_64, 8) if kind == "u64" else (U32_FIELDS, EXTREME_32, 4)
            pos = fields[where % len(fields)]
            value = extremes[what % len(extremes)] if where & 0x100 else what % 2 ** (8 * size)
            b[pos : pos + size] = value.to_bytes(size, "little")[: max(len(b) - pos, 0)]
    return bytes(b)


def load_everything(path: Path) -> None:
    """The operation under test: open, build every tensor, decode every tensor."""
    f = GGUFFile(path)
    with np.errstate(all="ignore"):  # garbage floats (NaN scales) are not what this tests
        for t in f.tensors().values():
            if isinstance(t, TernaryWeight):
                t.dequantize()
            else:
                t.to_numpy()


@pytest.fixture(scope="module")
def scratch():
    # One file rewritten per case; in RAM where there is a tmpfs (a disk write can cost ~5 ms)
    ram = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=ram) as d:
        yield Path(d) / "fuzz.gguf"


def test_seed_loads(scratch):
    scratch.write_bytes(SEED.data)
    load_everything(scratch)


@pytest.mark.fuzz
@settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_mutations(scratch, ops):
    scratch.write_bytes(mutate(SEED.data, ops))
    try:
        load_everything(scratch)
    except BitnetLabError:
        pass
