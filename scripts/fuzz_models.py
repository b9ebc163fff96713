#!/usr/bin/env python
"""Mutation fuzz of the model readers *and the engine* (issue 18, "Hostile input").

Every case is one mutated model file — a GGUF (from the real bitnet.cpp / llama.cpp files in
tests/data/real-files, the embedded default model, and TL1 / TL2 conversions of the real
checkpoint) or a safetensors checkpoint folder (the real HF checkpoint) — that a worker process
loads (``bl.load``), inspects (``inspect_model`` with statistics) and runs for a few tokens
(``Model.generate``, default context: the file's own). Every outcome is classified:

- ``ok``: everything ran;
- ``named``: a ``BitnetLabError`` (the project's one-line errors) stopped it — expected for most;
- ``unnamed``: any other exception (a bug: an error from deep inside);
- ``crash``: the worker died (a signal: SIGSEGV, SIGBUS, ...);
- ``hang``: one case ran longer than ``--timeout`` seconds (the worker is killed);
- ``blowup``: one case grew the worker's peak RSS by more than ``--mem-mib`` (and every worker
  runs under an address-space limit, ``--as-gib``, so a huge allocation cannot take the machine).

Mutations (chosen per case from a seeded generator, so case ``i`` of seed ``s`` is always the
same file): structured metadata rewrites (a config key given a hostile value or type: 0, -1,
2^31, 2^64-1, inf, NaN, 3.4e38, a string, a list; or deleted), byte edits (flip / set / insert /
delete / truncate, biased to the parsed header), non-finite values planted in float tensors,
random bytes in packed ternary data, ``config.json`` values and safetensors bytes for HF
folders, and "truncated while mapped" (load, run, truncate the file, run again: a clear error,
never SIGBUS).

    python scripts/fuzz_models.py --cases 20000 --workers 2            # the issue's fuzz
    python scripts/fuzz_models.py --cases 1 --first 1234 --verbose       # replay one case

Prints a summary (files, seconds, outcomes by kind and by mutation) and writes it as JSON
(``--json``); exits 1 when any case is unnamed / crash / hang / blowup. tests/engine/
test_fuzz_models.py runs a small slice of it in the suite (marked ``fuzz``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real-files"
BAD_KINDS = ("unnamed", "crash", "hang", "blowup")

# ---- seeds -----------------------------------------------------------------------------------------


def build_seeds(d: Path) -> dict[str, Path]:
    """The unmutated files, written or copied into ``d``: name -> path (a folder for HF)."""
    from bitnet_lab import paths
    from bitnet_lab.tools.convert import convert_hf_to_gguf

    d.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for name in ("bitnet-i2_s.gguf", "upstream-tq1_0.gguf", "upstream-tq2_0.gguf", "bitnet-f32.gguf"):
        seeds[name] = Path(shutil.copy(REAL / name, d / name))
    seeds["default-model.gguf"] = Path(shutil.copy(Path(paths.DATA_DIR) / "default-model.gguf", d / "default-model.gguf"))
    for t in ("tl1", "tl2"):
        seeds[f"real-{t}.gguf"] = convert_hf_to_gguf(REAL / "hf", d / f"real-{t}.gguf", t, progress=False)
    hf = d / "hf"
    if not hf.exists():
        shutil.copytree(REAL / "hf", hf)
    seeds["hf"] = hf
    return seeds


# ---- mutations ---------------------------------------------------------------------------------------

INT_VALUES = [0, 1, 2, 3, -1, -2, 7, 2**15, 2**16 + 1, 100_000, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1,
              2**63, 2**64 - 1, 4_000_000_000]
FLOAT_VALUES = [0.0, -0.0, -1.0, 0.5, 1e-45, 1e-30, 3.4e38, -3.4e38, math.inf, -math.inf, math.nan, 1e6, 2.0**31]
STR_VALUES = ["", "gelu", "relu2", "silu", "llama", "bitnet", "x" * 300, "\u00e9\u00e8"]
CONFIG_SUFFIXES = ["block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
                   "attention.head_count_kv", "attention.key_length", "attention.value_length", "rope.dimension_count",
                   "rope.freq_base", "attention.layer_norm_rms_epsilon", "vocab_size", "hidden_act"]
OTHER_KEYS = ["general.architecture", "general.alignment", "general.name", "tokenizer.ggml.bos_token_id",
              "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.padding_token_id",
              "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.model", "tokenizer.ggml.pre", "bitnet_lab.hidden_act",
              "tokenizer.ggml.add_bos_token", "bitnet_lab.tl_tiling", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
              "tokenizer.ggml.token_type", "tokenizer.ggml.merges"]
HF_KEYS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
           "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act", "tie_word_embeddings",
           "architectures", "model_type", "head_dim", "quantization_config", "bos_token_id", "eos_token_id",
           "pad_token_id", "rope_parameters"]

MUTATIONS = ("meta", "bytes", "header-bytes", "tensor-values", "ternary-bytes", "truncate-mapped")
HF_MUTATIONS = ("hf-config", "hf-bytes")


def _hostile_value(rng: np.random.Generator, vt_mod):
    """(value, GGUF type) of a hostile kind."""
    VT = vt_mod
    k = int(rng.integers(0, 6))
    if k == 0:
        v = INT_VALUES[int(rng.integers(0, len(INT_VALUES)))]
        if v < 0:
            return v, VT.INT32 if v >= -(2**31) else VT.INT64
        return v, VT.UINT32 if v < 2**32 else VT.UINT64
    if k == 1:
        return int(rng.integers(0, 2**32)), VT.UINT32
    if k == 2:
        return FLOAT_VALUES[int(rng.integers(0, len(FLOAT_VALUES)))], VT.FLOAT32 if rng.random() < 0.7 else VT.FLOAT64
    if k == 3:
        return STR_VALUES[int(rng.integers(0, len(STR_VALUES)))], VT.STRING
    if k == 4:
        n = int(rng.integers(0, 4))
        return [int(x) for x in rng.integers(0, 5000, n)], (VT.ARRAY, VT.INT32)
    return bool(rng.integers(0, 2)), VT.BOOL


def mutate_meta(rng, src: Path, dst: Path) -> str:
    from bitnet_lab.formats.ggml_types import VT
    from bitnet_lab.formats.gguf import GGUFFile
    from bitnet_lab.formats.gguf_writer import write_gguf

    f = GGUFFile(src)
    md, types = dict(f.metadata), dict(f.metadata_types)
    arch = md.get("general.architecture", "bitnet")
    what = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.75:
            key = f"{arch}.{CONFIG_SUFFIXES[int(rng.integers(0, len(CONFIG_SUFFIXES)))]}"
        else:
            key = OTHER_KEYS[int(rng.integers(0, len(OTHER_KEYS)))]
        if rng.random() < 0.12:
            md.pop(key, None)
            types.pop(key, None)
            what.append(f"del {key}")
            continue
        v, t = _hostile_value(rng, VT)
        md[key], types[key] = v, t
        what.append(f"{key}={v!r}"[:80])
    tensors = f.tensors()
    if "general.alignment" in md:  # the writer needs a sane alignment to lay the file out at all
        a = md["general.alignment"]
        if isinstance(a, bool) or not isinstance(a, int) or a <= 0 or a & (a - 1) or a > 4096:
            md.pop("general.alignment"), types.pop("general.alignment")
            what.append("(alignment kept)")
    try:
        write_gguf(dst, md, tensors, metadata_types=types)
    except Exception as e:  # a value the writer refuses to encode (e.g. -1 as UINT32): write it raw-ish
        return f"meta-unwritable {type(e).__name__}: " + "; ".join(what)
    return "meta " + "; ".join(what)


def mutate_bytes(rng, data: bytes, header_end: int, header_only: bool) -> tuple[bytes, str]:
    b = bytearray(data)
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        if not b:
            break
        k = int(rng.integers(0, 5))
        hi = min(header_end, len(b)) if header_only or rng.random() < 0.5 else len(b)
        pos = int(rng.integers(0, max(hi, 1)))
        if k == 0:
            b[pos] ^= 1 << int(rng.integers(0, 8))
            ops.append(f"flip@{pos}")
        elif k == 1:
            b[pos] = int(rng.choice([0, 0xFF, 0x7F, 0x80, int(rng.integers(0, 256))]))
            ops.append(f"set@{pos}")
        elif k == 2:
            n = int(rng.integers(1, 9))
            b[pos:pos] = bytes(rng.integers(0, 256, n, dtype=np.uint8))
            ops.append(f"insert{n}@{pos}")
        elif k == 3:
            n = int(rng.integers(1, 13))
            del b[pos : pos + n]
            ops.append(f"delete{n}@{pos}")
        else:
            cut = int(rng.integers(0, len(b) + 1))
            del b[cut:]
            ops.append(f"truncate@{cut}")
    return bytes(b), ",".join(ops)


def mutate_tensor(rng, src: Path, dst: Path, ternary: bool) -> str:
    from bitnet_lab.formats.gguf import GGUFFile

    f = GGUFFile(src)
    infos = [ti for ti in f.tensor_infos if (ti.layout is not None) == ternary and ti.type_name in
             (("F32", "F16") if not ternary else (ti.type_name,))]
    data = bytearray(src.read_bytes())
    if not infos:
        dst.write_bytes(bytes(data))
        return "tensor (none)"
    ti = infos[int(rng.integers(0, len(infos)))]
    if ternary:
        n = int(rng.integers(1, 17))
        for _ in range(n):
            p = ti.offset + int(rng.integers(0, ti.span))
            data[p] = int(rng.integers(0, 256))
        dst.write_bytes(bytes(data))
        return f"ternary {ti.name} {n} bytes"
    dt = "<f4" if ti.type_name == "F32" else "<f2"
    size = np.dtype(dt).itemsize
    idx = int(rng.integers(0, ti.nbytes // size))
    val = [math.nan, math.inf, -math.inf, 7e4, -7e4][int(rng.integers(0, 5))]
    with np.errstate(over="ignore"):
        data[ti.offset + idx * size : ti.offset + (idx + 1) * size] = np.array([val], dt).tobytes()
    dst.write_bytes(bytes(data))
    return f"value {ti.name}[{idx}]={val}"


def mutate_hf(rng, src: Path, dst: Path, kind: str) -> str:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    if kind == "hf-config":
        cfg = json.loads((dst / "config.json").read_text())
        what = []
        for _ in range(int(rng.integers(1, 3))):
            key = HF_KEYS[int(rng.integers(0, len(HF_KEYS)))]
            r = int(rng.integers(0, 7))
            if r == 0:
                cfg.pop(key, None)
                what.append(f"del {key}")
                continue
            v = [INT_VALUES[int(rng.integers(0, len(INT_VALUES)))],
                 FLOAT_VALUES[int(rng.integers(0, len(FLOAT_VALUES)))],
                 STR_VALUES[int(rng.integers(0, len(STR_VALUES)))], [1, 2], {"a": 1}, None,
                 2**int(rng.integers(31, 70))][r - 1]
            cfg[key] = v
            what.append(f"{key}={v!r}"[:80])
        (dst / "config.json").write_text(json.dumps(cfg))  # Python's json writes NaN / Infinity
        return "hf-config " + "; ".join(what)
    p = dst / "model.safetensors"
    data = p.read_bytes()
    hdr = 8 + int.from_bytes(data[:8], "little") if len(data) >= 8 else 8
    out, ops = mutate_bytes(rng, data, min(hdr, len(data)), header_only=rng.random() < 0.6)
    p.write_bytes(out)
    return "hf-bytes " + ops


def make_case(i: int, seed: int, seeds: dict[str, Path], work: Path, header_ends: dict[str, int]) -> tuple[Path, str, str]:
    """Write case ``i``'s file under ``work``; returns (path, mutation kind, description)."""
    rng = np.random.default_rng([seed, i])
    if rng.random() < 0.1:
        kind = HF_MUTATIONS[int(rng.integers(0, len(HF_MUTATIONS)))]
        return work / "hf", kind, mutate_hf(rng, seeds["hf"], work / "hf", kind)
    names = sorted(n for n in seeds if n != "hf")  # sorted: case i is the same file whatever the folder order
    src = seeds[names[int(rng.integers(0, len(names)))]]
    kind = MUTATIONS[int(rng.choice(len(MUTATIONS), p=[0.34, 0.16, 0.2, 0.12, 0.1, 0.08]))]
    dst = work / "case.gguf"
    if kind == "meta":
        desc = mutate_meta(rng, src, dst)
        if desc.startswith("meta-unwritable"):
            shutil.copy(src, dst)
    elif kind in ("bytes", "header-bytes"):
        data, desc = mutate_bytes(rng, src.read_bytes(), header_ends[src.name], kind == "header-bytes")
        dst.write_bytes(data)
    elif kind in ("tensor-values", "ternary-bytes"):
        desc = mutate_tensor(rng, src, dst, kind == "ternary-bytes")
    else:
        shutil.copy(src, dst)
        desc = "truncate while mapped"
    return dst, kind, f"{src.name}: {desc}"


# ---- running one case ----------------------------------------------------------------------------------


def run_case(path: Path, kind: str) -> tuple[str, str]:
    """Load, inspect, generate (and for truncate-mapped: truncate, generate again).
    Returns (outcome, detail): ok | named | unnamed."""
    import bitnet_lab as bl
    from bitnet_lab.errors import BitnetLabError
    from bitnet_lab.tools.inspect import inspect_model

    named = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy overflow warnings on garbage floats: not what this counts
            try:
                inspect_model(path, progress=False)
            except BitnetLabError as e:
                named = e
            model = bl.load(path)
            try:
                list(model.generate("def read(path):", n=3, seed=0))
                if kind == "truncate-mapped":
                    from bitnet_lab.formats.gguf import GGUFFile

                    os.truncate(path, GGUFFile(path).data_offset)
                    try:
                        list(model.generate("def read(path):", n=3, seed=0))
                        return "unnamed", "truncated while mapped, yet the forward ran"
                    except BitnetLabError as e:
                        if "truncated" not in str(e):
                            return "unnamed", f"truncated while mapped: {e}"
                        return "named", f"{type(e).__name__}: " + str(e).splitlines()[0][:300]
            finally:
                model.close()
    except BitnetLabError as e:
        named = e
    except RecursionError as e:
        return "unnamed", f"RecursionError: {e}"
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        return "unnamed", f"{type(e).__name__} at {where}: {str(e)[:300]}"
    if named is not None:
        msg = str(named)
        if "\n" in msg.strip():
            return "unnamed", f"multi-line {type(named).__name__}: {msg[:300]}"
        return "named", f"{type(named).__name__}: {msg[:300]}"
    return "ok", ""


def _peak_rss_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(args) -> None:
    """Run cases [first, stop): one line per case on stdout ("S i" when it starts, then
    "R i outcome kind rss_kib description | detail")."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.as_gib:
        lim = int(args.as_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    seeds = {p.name: p for p in Path(args.seeds).iterdir() if p.name.endswith(".gguf") or p.name == "hf"}
    header_ends = {n: _gguf_header_end(p) for n, p in seeds.items() if n != "hf"}
    work = Path(tempfile.mkdtemp(dir=args.work))
    import bitnet_lab  # noqa: F401  (imported once, before the first case)

    for i in range(args.first, args.stop):
        print(f"S {i}", flush=True)
        try:
            path, kind, desc = make_case(i, args.seed, seeds, work, header_ends)
        except Exception as e:  # a bug of the fuzzer itself, not of bitnet_lab
            print(f"R {i} ok fuzzer-skip 0 {type(e).__name__}: {e}".replace("\n", " "), flush=True)
            continue
        _peak_rss_reset()
        base = _peak_rss_kib()
        outcome, detail = run_case(path, kind)
        grew = _peak_rss_kib() - base
        if grew > args.mem_mib * 1024:
            outcome, detail = "blowup", f"peak RSS grew {grew // 1024} MiB; " + detail
        line = f"R {i} {outcome} {kind} {grew} {desc} | {detail}".replace("\n", " ")
        print(line, flush=True)
        if args.verbose:
            print(line, file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


def _gguf_header_end(p: Path) -> int:
    from bitnet_lab.formats.gguf import GGUFFile

    return int(GGUFFile(p).data_offset)


# ---- the driver ----------------------------------------------------------------------------------------


def run_fuzz(cases: int, *, first: int = 0, seed: int = 0, workers: int = 2, timeout: float = 30.0,
             mem_mib: int = 1024, as_gib: float = 24.0, work: Path | None = None, verbose: bool = False,
             progress: bool = False) -> dict:
    """Run cases [first, first + cases) on ``workers`` worker processes; returns the summary."""
    shm = Path("/dev/shm")
    own = work is None
    if own:
        work = Path(tempfile.mkdtemp(prefix="bitnet-lab-fuzz-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    t0 = time.perf_counter()
    try:
        seeds_dir = work / "seeds"
        build_seeds(seeds_dir)
        chunks = np.array_split(np.arange(first, first + cases), max(1, workers))
        results: dict[int, tuple] = {}
        lock = threading.Lock()

        def drive(lo: int, hi: int) -> None:
            nxt = lo
            while nxt < hi:
                cmd = [sys.executable, __file__, "--worker", "--seeds", str(seeds_dir), "--work", str(work),
                       "--first", str(nxt), "--stop", str(hi), "--seed", str(seed), "--mem-mib", str(mem_mib),
                       "--as-gib", str(as_gib)]
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
                err_lines: list[str] = []
                threading.Thread(target=lambda: err_lines.extend(p.stderr), daemon=True).start()
                current = None
                timer_box = {}

                def watchdog():
                    while p.poll() is None:
                        c = timer_box.get("case")
                        if c is not None and time.monotonic() - timer_box["t"] > timeout:
                            timer_box["killed"] = c
                            p.kill()
                            return
                        time.sleep(0.2)

                threading.Thread(target=watchdog, daemon=True).start()
                for line in p.stdout:
                    parts = line.rstrip("\n").split(" ", 5)
                    if parts[0] == "S":
                        current = int(parts[1])
                        timer_box["case"], timer_box["t"] = current, time.monotonic()
                    elif parts[0] == "R":
                        i = int(parts[1])
                        with lock:
                            results[i] = (parts[2], parts[3], int(parts[4]), parts[5] if len(parts) > 5 else "")
                        timer_box["case"] = None
                        current = None
                        nxt = i + 1
                rc = p.wait()
                if current is None and nxt >= hi:
                    break
                if current is None:  # died between cases: should not happen; do not loop forever
                    current = nxt
                killed = timer_box.get("killed")
                if killed is not None:
                    outcome, detail = "hang", f"killed after {timeout:.0f} s"
                else:
                    outcome, detail = "crash", f"worker exited with {rc}; stderr: {''.join(err_lines)[-400:]}"
                with lock:
                    results[current] = (outcome, "?", 0, detail)
                nxt = current + 1

        threads = [threading.Thread(target=drive, args=(int(c[0]), int(c[-1]) + 1)) for c in chunks if len(c)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if progress:
                with lock:
                    done = len(results)
                print(f"\r{done}/{cases} cases, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
            time.sleep(1.0)
        for t in threads:
            t.join()
        if progress:
            print(file=sys.stderr)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t0
    by_outcome = Counter(r[0] for r in results.values())
    by_kind: dict[str, Counter] = {}
    for r in results.values():
        by_kind.setdefault(r[1], Counter())[r[0]] += 1
    bad = {i: r for i, r in sorted(results.items()) if r[0] in BAD_KINDS}
    named_msgs = Counter(r[3].rsplit(" | ", 1)[-1].split(":", 1)[0] for r in results.values() if r[0] == "named")
    return {
        "cases": cases, "first": first, "seed": seed, "workers": workers, "seconds": round(wall, 1),
        "outcomes": dict(by_outcome), "by_mutation": {k: dict(v) for k, v in sorted(by_kind.items())},
        "named_error_types": dict(named_msgs.most_common()),
        "max_peak_rss_growth_mib": max((r[2] for r in results.values()), default=0) // 1024,
        "bad": {str(i): {"outcome": r[0], "mutation": r[1], "detail": r[3]} for i, r in bad.items()},
        "examples": {k: [r[3] for r in results.values() if r[1] == k and r[0] != "ok"][:3] for k in sorted(by_kind)},
        "missing": cases - len(results),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20_000)
    ap.add_argument("--first", type=int, default=0, help="index of the first case (replay: --first I --cases 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one case may take before it is a hang")
    ap.add_argument("--mem-mib", type=int, default=1024, help="peak-RSS growth of one case that counts as a blowup")
    ap.add_argument("--as-gib", type=float, default=24.0, help="address-space limit of each worker")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    s = run_fuzz(args.cases, first=args.first, seed=args.seed, workers=args.workers, timeout=args.timeout,
                 mem_mib=args.mem_mib, as_gib=args.as_gib, verbose=args.verbose, progress=True)
    text = json.dumps(s, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 1 if s["bad"] or s["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
