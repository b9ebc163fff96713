"""ISA levels and threads: which compiled kernel level runs, and on how many threads.

See :mod:`bitnet_lab.kernels` for the levels and the environment override.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
from collections.abc import Iterator


from bitnet_lab.errors import CodecError, ConfigError, KernelError  # noqa: F401 (KernelError re-exported)
from bitnet_lab.kernels.native import _k

__all__ = [
    "ENV_VAR",
    "ISA_ORDER",
    "KernelError",
    "active_isa",
    "allowed_cpus",
    "available_isas",
    "build_info",
    "cpu_features",
    "effective_threads",
    "openmp_enabled",
    "physical_cores",
    "set_isa",
    "usable_threads",
    "use_isa",
]

ENV_VAR = "BITNET_LAB_ISA"

# Must equal the C enum bl_isa (src/bl_kernels.h); checked below.
ISA_ORDER: tuple[str, ...] = ("scalar", "avx2", "avxvnni", "avx512vnni", "amx", "neon", "neon_dotprod")


if _k.isa_names() != ISA_ORDER:  # pragma: no cover - only after an inconsistent edit
    raise ImportError(f"bitnet_lab._kernels ISA table {_k.isa_names()} != kernels.ISA_ORDER {ISA_ORDER}")

_INDEX = {name: i for i, name in enumerate(ISA_ORDER)}


# ---- ISA levels ------------------------------------------------------------------------------


def available_isas() -> tuple[str, ...]:
    """Levels this CPU can run AND this build contains, in ``ISA_ORDER`` (best last)."""
    return tuple(n for i, n in enumerate(ISA_ORDER) if _k.isa_built(i) and _k.isa_supported(i))


def _check_isa(name: object, source: str) -> str:
    """``name`` if it is an available level, else KernelError saying why and what is.

    ``source`` prefixes the name in the message: "BITNET_LAB_ISA=", "isa=", "ISA "."""
    avail = available_isas()
    if name in avail:
        return name  # type: ignore[return-value]
    if not isinstance(name, str) or name not in _INDEX:
        why = f"is not an ISA level (known: {', '.join(ISA_ORDER)})"
    else:
        i = _INDEX[name]  # type: ignore[index]
        reasons = []
        if not _k.isa_built(i):
            reasons.append(f"this build (target {_k.build_info()['target_arch']}) has no kernels for it")
        if not _k.isa_supported(i):
            reasons.append("this CPU lacks its features")
        why = "is not available: " + " and ".join(reasons)
    raise KernelError(f"{source}{name!r} {why}; available here: {', '.join(avail)}")


def _isa_from_env() -> str:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return available_isas()[-1]
    return _check_isa(value, f"{ENV_VAR}=")


_active: str = _isa_from_env()


def active_isa() -> str:
    """The level kernels use when called with ``isa=None``."""
    return _active


def set_isa(name: str) -> None:
    """Make ``name`` the active level (KernelError when unknown or unavailable)."""
    global _active
    _active = _check_isa(name, "ISA ")


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """``with use_isa("scalar"): ...`` — run a block on one level, then restore the previous."""
    previous = _active
    set_isa(name)
    try:
        yield name
    finally:
        set_isa(previous)


def _isa_index(isa: str | None) -> int:
    return _INDEX[_active if isa is None else _check_isa(isa, "isa=")]


def cpu_features() -> dict[str, bool]:
    """CPU features the dispatcher read at import, e.g. {'avx2': True, 'avx512vnni': False, ...}
    on x86-64 or {'neon': True, 'dotprod': True} on aarch64. Features the compiler could not
    test (avxvnni on GCC < 11) are left out."""
    return _k.cpu_features()


def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP (threads > 1 run in parallel)."""
    return _k.openmp_enabled()


def build_info() -> dict:
    """How the kernels were built: compiler command and version, flags per C file (per ISA),
    OpenMP flags and result, target platform/architecture, and the MAD op made deliberately
    wrong by fault injection (``"fault"``: None unless switched on)."""
    info = _k.build_info()
    from bitnet_lab.kernels.faults import fault_status

    info["fault"] = fault_status()
    return info


# ---- threads ---------------------------------------------------------------------------------


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def allowed_cpus() -> list[int]:
    """The logical CPUs this process may run on: its affinity set where the OS has one, else all."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows
        return list(range(os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (affinity-aware).

    Heuristic, in order:
    1. Linux sysfs: count distinct (physical_package_id, core_id) over the CPUs in
       ``os.sched_getaffinity(0)`` — exact, and SMT siblings count once;
    2. /proc/cpuinfo: logical CPUs in the affinity set // ("siblings" // "cpu cores"), the
       threads per core of the first package (x86 Linux);
    3. otherwise the number of logical CPUs available (no SMT information: count them all).
    Cached for the life of the process.
    """
    cpus = allowed_cpus()
    cores = set()
    try:
        for cpu in cpus:
            topo = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            cores.add((_read_int(f"{topo}/physical_package_id"), _read_int(f"{topo}/core_id")))
    except (OSError, ValueError):
        cores = set()
    if cores:
        return len(cores)
    threads_per_core = 1
    try:
        info: dict[str, int] = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("siblings", "cpu cores") and key not in info:
                    info[key] = int(value)
                if len(info) == 2:
                    break
        if len(info) == 2 and info["cpu cores"] > 0:
            threads_per_core = max(1, info["siblings"] // info["cpu cores"])
    except (OSError, ValueError):
        pass
    return max(1, len(cpus) // threads_per_core)


def effective_threads(n: int | None = None) -> int:
    """The thread count a kernel uses: ``n`` when given (an int >= 1), else
    :func:`physical_cores` (SMT siblings share the SIMD units these kernels saturate)."""
    if n is None:
        return physical_cores()
    try:
        n = operator.index(n)
    except TypeError:
        raise KernelError(f"threads must be an integer >= 1 or None, got {n!r}") from None
    if n < 1:
        raise KernelError(f"threads must be >= 1, got {n}")
    return n


def usable_threads(threads: object, what: str = "threads") -> tuple[int, bool]:
    """A user's thread count checked and clamped: ``(count, clamped)``. Not a positive int (a
    bool, a float, a string, 0, a negative number): ConfigError naming ``what``. More than the
    CPUs this process may use (:func:`allowed_cpus`): that many, ``clamped`` True — more OpenMP
    threads than CPUs only slows every step down, and absurd counts crash the OpenMP runtime."""
    if isinstance(threads, bool):
        raise ConfigError(f"{what} must be positive (an integer), got {threads!r}")
    try:
        n = operator.index(threads)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{what} must be positive (an integer), got {threads!r}") from None
    if n < 1:
        raise ConfigError(f"{what} must be positive (an integer), got {n}")
    n_cpus = len(allowed_cpus())
    return (n_cpus, True) if n > n_cpus else (int(n), False)


def _dim(value: object, what: str) -> int:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise CodecError(f"{what} must be an integer, got {value!r}") from None


