"""Build of bitnet_lab's native kernels (metadata lives in pyproject.toml).

One extension, ``bitnet_lab._kernels``: the Cython wrappers (cython_kernels/*.pyx) plus the
C sources of cython_kernels/src/. What is special here, all in ``BuildKernels`` below:

1. **Per-ISA flags.** Every ISA level's C file is compiled to an object with ITS OWN flags
   (its level's line in cython_kernels/isa_flags.txt, the table the C-level tests read too;
   the files are listed in ``ISA_SOURCES``) and linked into the extension as an extra object.
   Nothing is ever compiled with -march=native and the build host's CPU is never probed: an
   AVX-512 file is built on any x86-64 host and simply not called on CPUs without AVX-512.
   The choice of level happens at import, from the CPU's features (src/bl_dispatch.c).
   x86 files are built only for x86-64 targets, the NEON file only for aarch64 targets
   (the target is ``sysconfig.get_platform()``, i.e. the Python being built for).
2. **Numerics flags** for every C file (the table's ``common`` line): -O3
   -fno-strict-aliasing -ffp-contract=off (no FMA contraction, so float results never depend
   on the compiler's choice).
3. **OpenMP is optional**: a tiny program is compiled and linked with -fopenmp (a test of
   the compiler, not of the CPU); when that works, the extension is built with it.
   Set BITNET_LAB_NO_OPENMP=1 to build without it.
4. **Build record**: a generated header (bl_build_info.h, in the build directory) carries
   the compiler command, the flags of every C file and the OpenMP result into the module;
   ``bitnet_lab.kernels.build_info()`` returns it.

GCC and Clang (and compatibles) only: MSVC's flags are different and are not supported yet.
"""

from __future__ import annotations

import json
import os
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 60 vendors distutils; the errors moved with it
    from setuptools.errors import CompileError, LinkError, PlatformError
except ImportError:  # pragma: no cover - old setuptools
    from distutils.errors import CompileError, LinkError
    from distutils.errors import DistutilsPlatformError as PlatformError

KERNEL_DIR = "cython_kernels"
C_SRC_DIR = f"{KERNEL_DIR}/src"
# Per-ISA compiler flags, shared with the C-level tests (cython_kernels/tests/build_c_objects.sh).
ISA_FLAGS_TABLE = f"{KERNEL_DIR}/isa_flags.txt"


@dataclass(frozen=True)
class IsaLevel:
    """One line of ISA_FLAGS_TABLE: the target a level's files are for and the level's flags."""

    arch: str | None  # "x86_64" / "aarch64": built only for that target; None ("any"): always
    flags: tuple[str, ...]


def read_isa_flags(path: str = ISA_FLAGS_TABLE) -> dict[str, IsaLevel]:
    """{level: IsaLevel} from the table (lines "level arch flag...", '#' comment lines)."""
    levels: dict[str, IsaLevel] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or fields[1] not in ("any", "x86_64", "aarch64") or fields[0] in levels:
            raise ValueError(f"{path}:{n}: expected a new 'level any|x86_64|aarch64 flags...' line: {line!r}")
        levels[fields[0]] = IsaLevel(None if fields[1] == "any" else fields[1], tuple(fields[2:]))
    return levels


ISA_FLAGS = read_isa_flags()
# Applied to every C file of the extension (the Cython output included).
COMMON_FLAGS = list(ISA_FLAGS.pop("common").flags)


@dataclass(frozen=True)
class IsaSource:
    """One per-ISA C file: the level it implements, the dispatch macro it defines, extra flags."""

    isa: str  # ISA level name, as in src/bl_kernels.h and ISA_FLAGS_TABLE
    path: str  # relative to the project root
    macro: str | None = None  # defined for bl_dispatch.c when the file is built (BL_BUILD_<LEVEL>)
    extra: tuple[str, ...] = ()  # this file's own flags, after its level's

    @property
    def arch(self) -> str | None:
        """The target the file is built for (None: every target)."""
        return ISA_FLAGS[self.isa].arch

    @property
    def flags(self) -> tuple[str, ...]:
        """The file's ISA flags (added after COMMON_FLAGS): its level's, then its own."""
        return (*ISA_FLAGS[self.isa].flags, *self.extra)


ISA_SOURCES = (
    IsaSource("scalar", f"{C_SRC_DIR}/pack_scalar.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/pack_avx2.c", "BL_BUILD_AVX2"),
    IsaSource("avx512vnni", f"{C_SRC_DIR}/pack_avx512vnni.c", "BL_BUILD_AVX512VNNI"),
    # Advanced SIMD is part of the aarch64 baseline: no flag needed.
    IsaSource("neon", f"{C_SRC_DIR}/pack_neon.c", "BL_BUILD_NEON"),
    # Machine-ceiling microkernels for bitnet_lab.bench (src/ceiling.h): read bandwidth and
    # int8 dot peak per level; their own macros, so a level's ceiling is "built" on its own.
    IsaSource("scalar", f"{C_SRC_DIR}/ceiling_scalar.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/ceiling_avx2.c", "BL_BUILD_CEILING_AVX2"),
    IsaSource("avxvnni", f"{C_SRC_DIR}/ceiling_avxvnni.c", "BL_BUILD_CEILING_AVXVNNI"),
    IsaSource("avx512vnni", f"{C_SRC_DIR}/ceiling_avx512vnni.c", "BL_BUILD_CEILING_AVX512VNNI"),
    IsaSource("amx", f"{C_SRC_DIR}/ceiling_amx.c", "BL_BUILD_CEILING_AMX"),
    IsaSource("neon", f"{C_SRC_DIR}/ceiling_neon.c", "BL_BUILD_CEILING_NEON"),
    IsaSource("neon_dotprod", f"{C_SRC_DIR}/ceiling_neon_dotprod.c", "BL_BUILD_CEILING_NEON_DOTPROD"),
    # TL1 / TL2 LUT kernels (bl_lut.h); avxvnni / neon_dotprod reuse avx2 / neon (bl_dispatch.c).
    IsaSource("scalar", f"{C_SRC_DIR}/lut_scalar.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/lut_avx2.c", "BL_BUILD_LUT_AVX2"),
    # AVX-512 GEMVs (their LUT build is AVX2's); the avx512vnni and amx levels run them.
    IsaSource("avx512vnni", f"{C_SRC_DIR}/lut_avx512.c", "BL_BUILD_LUT_AVX512"),
    IsaSource("neon", f"{C_SRC_DIR}/lut_neon.c", "BL_BUILD_LUT_NEON"),
    # MAD family (bl_mad.h): activation quantisation and the I2_S / TQ2_0 / TQ1_0 products.
    # A level's macro is defined once, by its first file above; these only add objects — except
    # the two levels that exist only for the MAD kernels (avxvnni, neon_dotprod).
    IsaSource("scalar", f"{C_SRC_DIR}/act_scalar.c"),
    IsaSource("scalar", f"{C_SRC_DIR}/mad_scalar.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/act_avx2.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/mad_avx2.c"),
    # AVX-VNNI: needs GCC >= 11 or Clang >= 12 to compile; called only on CPUs that have it.
    IsaSource("avxvnni", f"{C_SRC_DIR}/mad_avxvnni.c", "BL_BUILD_AVXVNNI"),
    IsaSource("avx512vnni", f"{C_SRC_DIR}/act_avx512.c"),
    IsaSource("avx512vnni", f"{C_SRC_DIR}/mad_avx512vnni.c"),
    # AMX-INT8 tile GEMMs (the amx level = avx512vnni + these): GCC >= 11 or Clang >= 12.
    IsaSource("amx", f"{C_SRC_DIR}/mad_amx.c", "BL_BUILD_AMX"),
    IsaSource("neon", f"{C_SRC_DIR}/act_neon.c"),
    IsaSource("neon", f"{C_SRC_DIR}/mad_neon.c"),
    IsaSource("neon_dotprod", f"{C_SRC_DIR}/mad_neon_dotprod.c", "BL_BUILD_NEON_DOTPROD"),
    # Native engine, float side (src/engine_float.h): float64-accumulated dots of attention and
    # the lm_head. F16C converts the fp16 weights; the levels' macros come from the files above.
    IsaSource("scalar", f"{C_SRC_DIR}/float_scalar.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/float_avx2.c", extra=("-mf16c",)),
    IsaSource("avx512vnni", f"{C_SRC_DIR}/float_avx512.c", extra=("-mf16c", "-mfma")),
    IsaSource("scalar", f"{C_SRC_DIR}/lm_q6k_scalar.c"),
    IsaSource("avx2", f"{C_SRC_DIR}/lm_q6k_avx2.c", extra=("-mf16c",)),
    IsaSource("avx512vnni", f"{C_SRC_DIR}/lm_q6k_avx512.c", extra=("-mf16c", "-mfma")),
)

HEADERS = [f"{C_SRC_DIR}/bl_kernels.h", f"{KERNEL_DIR}/bl_kernels.pxd"]
HEADERS += [f"{C_SRC_DIR}/bl_lut.h", f"{C_SRC_DIR}/bl_lut_layout.h", f"{KERNEL_DIR}/lut.pxi"]
HEADERS += [f"{C_SRC_DIR}/bl_mad.h", f"{C_SRC_DIR}/bl_mad_impl.h", f"{C_SRC_DIR}/bl_mad_x86.h", f"{KERNEL_DIR}/mad.pxi"]
HEADERS += [f"{C_SRC_DIR}/bl_amx.h"]
HEADERS += [f"{C_SRC_DIR}/engine.h", f"{C_SRC_DIR}/engine_float.h", f"{KERNEL_DIR}/engine.pxi"]
HEADERS += [f"{KERNEL_DIR}/gguf.pxi"]
HEADERS += [f"{C_SRC_DIR}/bl_q8k.h", f"{KERNEL_DIR}/q8k.pxi", f"{C_SRC_DIR}/bl_q6k.h", f"{C_SRC_DIR}/lm_q6k_x86.h",
            f"{KERNEL_DIR}/lmhead.pxi"]


def target_arch() -> str:
    """The CPU architecture the extension is built for, from the target Python's platform tag.

    'linux-x86_64', 'win-amd64', 'macosx-11.0-x86_64' -> 'x86_64'; 'linux-aarch64',
    'macosx-11.0-arm64' -> 'aarch64'; anything else (including macOS universal2, which would
    need per-architecture flags) -> 'other', which builds the scalar level only.
    """
    plat = sysconfig.get_platform().lower()
    if plat.endswith(("x86_64", "amd64")):
        return "x86_64"
    if plat.endswith(("aarch64", "arm64")):
        return "aarch64"
    return "other"


class BuildKernels(build_ext):
    """build_ext that compiles each ISA file with its own flags (see the module docstring)."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type not in ("unix", "mingw32", "cygwin"):
            raise PlatformError(
                f"bitnet_lab's kernels need GCC or Clang; compiler type "
                f"{self.compiler.compiler_type!r} (flags differ) is not supported yet"
            )
        arch = target_arch()
        openmp_flags, openmp_note = self._detect_openmp()
        isa_objects, isa_record, macros = self._compile_isa_sources(arch)
        gen_dir = self._write_build_info(arch, openmp_flags, openmp_note, isa_record)

        for ext in self.extensions:
            ext.include_dirs = [*ext.include_dirs, C_SRC_DIR, gen_dir]
            ext.define_macros = [*ext.define_macros, *macros]
            ext.extra_objects = [*ext.extra_objects, *isa_objects]
            ext.extra_compile_args = [*ext.extra_compile_args, *COMMON_FLAGS, *openmp_flags]
            ext.extra_link_args = [*ext.extra_link_args, *openmp_flags]
        super().build_extensions()

    # -- per-ISA objects -----------------------------------------------------------------------
    def _compile_isa_sources(self, arch: str):
        """Compile every ISA file meant for `arch` with COMMON_FLAGS + its own flags.

        Returns (object paths, {file: record} for build_info, [(macro, "1")] for dispatch).
        """
        objects, record, macros = [], {}, []
        for src in ISA_SOURCES:
            if src.arch is not None and src.arch != arch:
                continue
            flags = [*COMMON_FLAGS, *src.flags]
            objects += self.compiler.compile(
                [src.path],
                output_dir=self.build_temp,
                include_dirs=[C_SRC_DIR],
                extra_postargs=flags,
                depends=HEADERS,
            )
            record[Path(src.path).name] = {"isa": src.isa, "flags": flags}
            if src.macro:
                macros.append((src.macro, "1"))
        return objects, record, macros

    # -- OpenMP -------------------------------------------------------------------------------
    def _detect_openmp(self) -> tuple[list[str], str]:
        """(-fopenmp flags or [], a note) from compiling and linking a tiny OpenMP program."""
        if os.environ.get("BITNET_LAB_NO_OPENMP", "") not in ("", "0"):
            return [], "disabled by BITNET_LAB_NO_OPENMP"
        flags = ["-fopenmp"]
        test = (
            "#include <omp.h>\n"
            "int main(void) {\n"
            "    int n = 0;\n"
            "    #pragma omp parallel reduction(+ : n)\n"
            "    n += omp_get_num_threads() > 0;\n"
            "    return n > 0 ? 0 : 1;\n"
            "}\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "openmp_test.c"
            src.write_text(test)
            try:
                objs = self.compiler.compile([str(src)], output_dir=tmp, extra_postargs=flags)
                self.compiler.link_executable(objs, "openmp_test", output_dir=tmp, extra_postargs=flags)
            except (CompileError, LinkError) as exc:
                print(f"bitnet_lab build: OpenMP not available ({exc}); kernels run single-threaded")
                return [], f"compiler rejected -fopenmp: {exc}"
        print("bitnet_lab build: OpenMP enabled (-fopenmp)")
        return flags, "compiler accepts -fopenmp"

    # -- build record -------------------------------------------------------------------------
    def _write_build_info(self, arch, openmp_flags, openmp_note, isa_record) -> str:
        """Write bl_build_info.h (a JSON string constant) and return its directory."""
        info = {
            "compiler": list(self.compiler.compiler_so),
            "linker": list(self.compiler.linker_so),
            "platform": sysconfig.get_platform(),
            "arch": arch,
            "common_flags": COMMON_FLAGS,
            "module_flags": [*COMMON_FLAGS, *openmp_flags],
            "isa_files": isa_record,
            "openmp": bool(openmp_flags),
            "openmp_flags": openmp_flags,
            "openmp_note": openmp_note,
        }
        gen_dir = Path(self.build_temp) / "bl_generated"
        gen_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(info, ensure_ascii=True, sort_keys=True)
        header = (
            "/* Generated by setup.py (BuildKernels); do not edit. */\n"
            # json.dumps of the JSON text is a valid C string literal for ASCII input.
            f"static const char BL_BUILD_INFO_JSON[] = {json.dumps(text)};\n"
        )
        path = gen_dir / "bl_build_info.h"
        if not path.exists() or path.read_text() != header:  # keep the mtime when unchanged
            path.write_text(header)
        return str(gen_dir)


extensions = [
    Extension(
        "bitnet_lab._kernels",
        sources=[f"{KERNEL_DIR}/_kernels.pyx", f"{C_SRC_DIR}/bl_dispatch.c", f"{C_SRC_DIR}/mad_dispatch.c",
                 f"{C_SRC_DIR}/mad_x4.c", f"{C_SRC_DIR}/mad_x16.c", f"{C_SRC_DIR}/engine.c",
                 f"{C_SRC_DIR}/q8k.c"],
        # The per-ISA files are linked as objects; listing them here makes a change to any
        # of them relink the module.
        depends=[*HEADERS, ISA_FLAGS_TABLE, *(s.path for s in ISA_SOURCES)],
    )
]

# The Python packages: every regular package under bitnet_lab/ (found, so a new sub-package
# ships without being listed), plus bitnet_lab.data, the repository's top-level data/ directory
# (package-dir and package-data in pyproject.toml; bitnet_lab/paths.py finds it through
# importlib.resources). The list lives here because pyproject.toml's packages.find cannot
# also name a package mapped from another directory.
PACKAGES = [*find_packages(include=["bitnet_lab", "bitnet_lab.*"]), "bitnet_lab.data"]

setup(
    packages=PACKAGES,
    ext_modules=cythonize(
        extensions,
        include_path=[KERNEL_DIR],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
    cmdclass={"build_ext": BuildKernels},
)
