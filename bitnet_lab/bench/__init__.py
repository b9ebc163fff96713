"""`bitnet_lab.bench`: the measuring instruments — pp / tg throughput, machine ceilings, the
decode roofline, load time and RSS, a per-op decode breakdown, kernel microbenchmarks, and
llama.cpp / bitnet.cpp side by side. ``bitnet-lab bench`` prints them; notebooks call the same
functions and get table objects (``_repr_html_``, ``to_markdown``, ``to_csv``, ``to_json``).

The pp / tg protocol is llama-bench's (ggml-org/llama.cpp:tools/llama-bench/llama-bench.cpp):

- ``pp N``: N prompt tokens in ONE forward call (one batch) into an empty KV cache; the engine
  is asked for the last row of logits only when it can do that (``last_only=True``), as
  llama.cpp computes only the logits it is asked for.
- ``tg N``: N tokens fed one at a time into an empty cache (BOS first when the model has one).
- Token ids are random (seeded) and drawn before the clock starts; no tokenizer and no sampler
  run: tokenisation and sampling are not timed.
- Per test: one warm-up run that is not recorded (pp: the whole prompt; tg: one token — JIT
  compilation, page faults of the memory-mapped weights, thread start-up land there), then
  ``repeat`` timed runs, each on a fresh cache made before the clock starts.
- Per run ``t/s = 1e9 · N / t_ns``; reported as mean ± sample standard deviation of those.

The modules: ``protocol`` (pp / tg runs, the roofline column), ``table`` (table objects),
``machine`` (info, ceilings, roofline), ``profile`` (load time and RSS, decode breakdown),
``kernels`` (kernel microbenchmarks), ``compare`` (llama.cpp / bitnet.cpp baselines).
"""

from __future__ import annotations

from bitnet_lab.bench.compare import (
    compare_external,
    compare_llama_cpp,
)
from bitnet_lab.bench.kernels import (
    kernel_bench,
    KernelShape,
    layout_shapes,
)
from bitnet_lab.bench.machine import (
    busy_bandwidth,
    Ceiling,
    decode_bytes,
    decode_roofline,
    DecodeRoofline,
    int8_peak,
    machine_ceilings,
    machine_header,
    machine_info,
    MachineCeilings,
    memory_bandwidth,
    tg_mean_positions,
)
from bitnet_lab.bench.profile import (
    decode_breakdown,
    DecodeBreakdown,
    load_profile,
    LoadProfile,
)
from bitnet_lab.bench.protocol import (
    attach_roofline,
    bench,
    bracketed_bandwidth,
    model_label,
    resolve_backends,
    run_test,
)
from bitnet_lab.bench.table import (
    BenchRow,
    BenchTable,
    rows_from_llama_bench_json,
    Table,
)

__all__ = [
    "BenchRow",
    "BenchTable",
    "Ceiling",
    "DecodeBreakdown",
    "DecodeRoofline",
    "KernelShape",
    "LoadProfile",
    "MachineCeilings",
    "Table",
    "attach_roofline",
    "bench",
    "bracketed_bandwidth",
    "busy_bandwidth",
    "compare_external",
    "compare_llama_cpp",
    "decode_breakdown",
    "decode_bytes",
    "decode_roofline",
    "int8_peak",
    "kernel_bench",
    "layout_shapes",
    "load_profile",
    "machine_ceilings",
    "machine_header",
    "machine_info",
    "memory_bandwidth",
    "tg_mean_positions",
    "model_label",
    "resolve_backends",
    "rows_from_llama_bench_json",
    "run_test",
]

# ``bitnet_lab.bench(model)`` calls bench(): importing a submodule rebinds the package attribute
# to this module, so the module itself is made callable (_callable.py).
from bitnet_lab._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, bench)
