"""Where a model's weights live: the file's memory map (default) or anonymous huge pages.

``bitnet_lab.load(..., mmap=False)`` (CLI ``--no-mmap``, llama.cpp's flag) reads every tensor of a
memory-mapped file into one anonymous arena, 2 MiB-aligned and advised for transparent huge
pages, instead of streaming the weights through the page cache.

Why: decode streams every weight once per token, so it runs at the speed the core can pull
bytes from DRAM. Through a file mapping those bytes sit in whatever page-cache folios the file
got when it was written or read (usually 4 KiB pages: a TLB miss and a hardware-prefetcher stop
every 4 KiB); an anonymous THP arena is 2 MiB pages, and decode runs faster from it (`bench -mmp
0,1` measures both side by side; figures in docs/benchmarks.md#decode-memory-layout-and-streaming).

Cost: the load reads the whole file (slower than mapping it when the page cache holds the file,
docs/benchmarks.md#load-and-start-up; a file not yet cached is read from disk either way) and the weights are
private memory (RSS ≈ the file size, as with a fully touched mapping; the copy reads with
``preadv`` straight into the arena, so the mapping's pages are never touched and the peak stays
≈ one file size). Tensors that are not views of a file mapping are copied as they are.

With the default mapping the native engine still moves what it streams every token into arenas
of its own: the I2_S projections when it re-orders them (engine._to_x4) and the lm_head
(:func:`to_huge_pages`; decode reads the 2B-4T's 657 MB lm_head faster from there than through
the mapping), so ``-mmp 1`` and ``-mmp 0`` decode alike; the mapping keeps the load lazy for
the rest (embedding rows, norms) and for the other backends.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import replace
from typing import Collection, Mapping

import numpy as np

from bitnet_lab.errors import BitnetLabError

HUGE_PAGE = 2 << 20  # x86-64 / arm64 PMD size: the arena starts on this boundary
ALIGN = 64           # every tensor starts on a cache line (what the kernels' loads like best)


def _file_view(a: np.ndarray) -> tuple[str, int] | None:
    """(file name, byte offset in it) when ``a`` is a contiguous view of an np.memmap, else None.
    The offset is measured from the ROOT memmap (the array that owns the mapping, whose first
    byte is file offset ``.offset``): slices of a memmap are memmaps too and inherit its
    ``offset`` attribute unchanged, so only the root's is right."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or getattr(root, "filename", None) is None or not a.flags.c_contiguous:
        return None
    start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return str(root.filename), int(root.offset) + int(start)


def _arena(nbytes: int) -> np.ndarray:
    """A zero-filled anonymous uint8 buffer of ``nbytes``, starting on a 2 MiB boundary, with
    MADV_HUGEPAGE where the OS has it (a hint: THP 'never' still gives working memory)."""
    raw = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            raw.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    buf = np.frombuffer(raw, dtype=np.uint8)
    skip = (-buf.__array_interface__["data"][0]) % HUGE_PAGE
    return buf[skip : skip + nbytes]


def lazy_zeros(shape: tuple[int, ...], dtype: np.dtype | type, what: str = "an array") -> np.ndarray:
    """A zero-filled array whose memory is committed 4 KiB page by page as it is written, not at
    once: an anonymous mapping advised MADV_NOHUGEPAGE. For the KV cache, which is written one
    position at a time in n_layers·n_kv_heads separate blocks. Why not np.zeros: NumPy advises
    every allocation of 4 MiB or more for transparent huge pages, so the first token's write into
    each block commits (and zeroes) the whole 2 MiB page around it — on the 2B-4T at n_ctx 2048
    that is the cache's entire 300 MB (f32; 157 MB with f16) at the first prefill (slow where fresh
    memory is slow to fault in, docs/benchmarks.md#load-and-start-up), for two tokens' worth of keys."""
    dt = np.dtype(dtype)
    n = math.prod(int(d) for d in shape) * dt.itemsize  # Python ints: never a wrapped size
    try:
        raw = mmap.mmap(-1, max(n, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, OverflowError, ValueError) as e:
        raise BitnetLabError(f"cannot reserve {n / 2**30:.4g} GiB for {what}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            raw.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:
            pass  # a hint only: the array is correct either way
    return np.frombuffer(raw, dtype=dt, count=n // dt.itemsize).reshape(shape)


def copy_bytes(src: np.ndarray, dst: np.ndarray, threads: int = 1) -> None:
    """The bytes of the contiguous array ``src`` into the uint8 array ``dst`` (same byte count):
    with preadv when ``src`` is a view of a memory-mapped file, so its pages enter the page cache
    but never this process's RSS (a NumPy copy would fault every page of the mapping in); in
    ``threads`` parallel slices of whole 2 MiB pages (most of a large copy's time is the first
    touch of ``dst``'s fresh pages, which the slices share between cores)."""
    n = int(src.nbytes)
    if int(dst.nbytes) != n:
        raise BitnetLabError(f"copy_bytes: {n} source bytes into a {int(dst.nbytes)}-byte buffer")
    where = _file_view(src)
    if where is None:
        dst[...] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        return
    path, pos = where
    step = -(-n // max(1, threads) // HUGE_PAGE) * HUGE_PAGE  # whole 2 MiB pages per slice
    fd = os.open(path, os.O_RDONLY)
    try:
        def read(lo: int) -> None:
            hi = min(n, lo + step)
            _pread_all(fd, dst[lo:hi], pos + lo, f"{path}: {hi - lo} bytes at offset {pos + lo}")

        if threads > 1 and n > step:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as pool:
                for f in [pool.submit(read, lo) for lo in range(0, n, step)]:
                    f.result()
        else:
            read(0)
    finally:
        os.close(fd)


def to_huge_pages(a: np.ndarray, threads: int = 1) -> np.ndarray:
    """``a`` itself, or — when ``a`` is a contiguous view of a memory-mapped file — the same
    values in a fresh THP arena, read by :func:`copy_bytes` in ``threads`` slices (the mapping's
    pages never enter RSS; any that a reader already touched are dropped). For a weight that is
    streamed whole every token."""
    if _file_view(a) is None:
        return a
    n = int(a.nbytes)
    dst = _arena(max(n, 1))[:n]
    copy_bytes(a, dst, threads)
    drop_pages(a)
    return dst.view(a.dtype).reshape(a.shape)


def drop_pages(a: np.ndarray) -> None:
    """Take the pages of ``a``, a view of a memory-mapped file, out of this process's RSS
    (MADV_DONTNEED on the whole pages inside it; the file's data and the page cache are untouched,
    a later read faults them back in). No-op for other arrays or where the OS lacks madvise."""
    if _file_view(a) is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    mm = getattr(root, "_mmap", None)
    if mm is None:
        return
    page = mmap.PAGESIZE
    base = root.__array_interface__["data"][0] - int(root.offset) % mmap.ALLOCATIONGRANULARITY  # the map's start
    start = a.__array_interface__["data"][0] - base
    lo, hi = -(-start // page) * page, (start + int(a.nbytes)) // page * page  # whole pages inside a only
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _pread_all(fd: int, dst: np.ndarray, pos: int, what: str) -> None:
    got, n = 0, int(dst.nbytes)
    while got < n:  # preadv may return short reads; loop until the range is complete
        k = os.preadv(fd, [memoryview(dst[got:])], pos + got)
        if k <= 0:
            raise BitnetLabError(f"{what}: the file ends early ({got} of {n} bytes read)")
        got += k


def to_anonymous_memory(tensors: Mapping[str, object], skip: Collection[str] = ()) -> dict[str, object]:
    """The same tensors with every ``data`` array moved into one THP arena (module docstring).
    Values, dtypes and shapes are unchanged: the result is interchangeable with the input.
    Tensors named in ``skip`` stay as they are (the native engine re-orders I2_S projections into
    memory of its own at load: copying them here first would hold them twice)."""
    sizes = {name: int(t.data.nbytes) for name, t in tensors.items() if name not in skip}
    offsets, total = {}, 0
    for name, n in sizes.items():
        offsets[name] = total
        total += -(-n // ALIGN) * ALIGN
    arena = _arena(max(total, 1))
    files: dict[str, int] = {}
    try:
        out = {}
        for name, t in tensors.items():
            if name in skip:
                out[name] = t
                continue
            src, n = t.data, sizes[name]
            dst = arena[offsets[name] : offsets[name] + n]
            where = _file_view(src)
            if where is None:
                dst[...] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
            else:
                path, pos = where
                fd = files.get(path)
                if fd is None:
                    fd = files[path] = os.open(path, os.O_RDONLY)
                _pread_all(fd, dst, pos, f"{path}: tensor {name!r} ({n} bytes at offset {pos})")
            out[name] = replace(t, data=dst.view(src.dtype).reshape(src.shape))
        return out
    finally:
        for fd in files.values():
            os.close(fd)


class MappedFiles:
    """The files that arrays still map, to check before native code touches them.

    A file truncated while it is mapped turns the next read of a page past its new end into
    SIGBUS, which kills the process; native code cannot catch it. So before each call the engine
    asks every file it still maps for its size — one ``fstat`` of the mapping's own descriptor
    (``mmap.size()``; the inode that is mapped, whatever the path now names) — and its
    modification time (one ``stat`` of the path, compared when it still names that file), and
    refuses with the file's name when the file got shorter than the bytes in use or was
    rewritten. Arrays that map no file (``load(mmap=False)``, the engine's own copies) cost nothing.
    """

    def __init__(self, arrays) -> None:
        need: dict[str, list] = {}   # path -> [mmap object, bytes in use, size, (dev, ino, mtime_ns)]
        for a in arrays:
            if not isinstance(a, np.ndarray):
                continue
            where = _file_view(a) if a.flags.c_contiguous else None
            if where is None:
                continue
            path, pos = where
            root = a
            while isinstance(root.base, np.ndarray):
                root = root.base
            mm = getattr(root, "_mmap", None)
            if mm is None:
                continue
            entry = need.get(path)
            end = pos + int(a.nbytes)
            if entry is None:
                try:
                    st = os.stat(path)
                    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns)
                except OSError:
                    stamp = None
                need[path] = [mm, end, mm.size(), stamp]
            else:
                entry[1] = max(entry[1], end)
        self._files = need

    @property
    def paths(self) -> list[str]:
        return list(self._files)

    def check(self) -> None:
        for path, (mm, end, size, stamp) in self._files.items():
            try:
                now = mm.size()
            except (OSError, ValueError) as e:
                raise BitnetLabError(f"{path}: the model file can no longer be read ({e}); load it again") from None
            if now < end or now != size:
                raise BitnetLabError(
                    f"{path}: the model file changed size while it was in use ({size} bytes at load, now "
                    f"{now}; the weights in use end at byte {end}): it was truncated or rewritten; "
                    "load it again (or load with mmap=False / --no-mmap to keep the weights in memory)")
            if stamp is not None:
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # removed or renamed: the mapping keeps the old file's data, intact
                if (st.st_dev, st.st_ino) == stamp[:2] and st.st_mtime_ns != stamp[2]:
                    raise BitnetLabError(
                        f"{path}: the model file was modified while it was in use (its modification time "
                        "changed since load); load it again (or load with mmap=False / --no-mmap)")
