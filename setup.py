"""Build the Cython/OpenMP kernels of addercore.

Every ``addercore_ext/*.pyx`` is compiled as ``addercore_ext.<name>`` with OpenMP and ``-O3``.
The float32/float64 variants come from Cython fused types (``floating``) in the .pyx files and
from one C source per kernel section instantiated twice in ``adder_kernels.h``; there is no
code generation step.

Environment switches:
  ADDERCORE_MARCH      ``-march=`` value; default ``native`` (fastest on the build machine).
                       Set ``ADDERCORE_MARCH=`` (empty) or ``x86-64-v2`` for a portable build.
  ADDERCORE_AVX512=1   opt-in AVX-512F float kernels (with an ``-march`` that has AVX-512F, e.g.
                       the default ``native`` on such a CPU); default: AVX2+FMA.  The integer
                       SAD kernels (adder_int.h) use AVX-512BW whenever the ``-march`` has it
                       (there it is 1.5-2.5x faster than AVX2, and numpy's sgemm, the
                       reference they are measured against, uses AVX-512 too).
  ADDERCORE_AVX512=0   AVX2 for every kernel, the integer ones included.
  ADDERCORE_SANITIZE   ``address`` builds with AddressSanitizer (for the bounds tests).
  ADDERCORE_BOUNDSCHECK=1  compiles with Cython's boundscheck/wraparound on (debug).
"""
import os
import sys
from pathlib import Path

import numpy as np
from setuptools import Extension, setup

HERE = Path(__file__).parent
EXT_DIR = HERE / "addercore_ext"


def branch_alignment_flags():
    """Compiler flags that keep jumps off 32-byte boundaries on x86, if the toolchain has them.

    Intel's microcode fix for the "JCC erratum" (Skylake to Cascade Lake server parts, the
    Xeons of many cloud machines) stops caching decoded instructions for any 32-byte block
    in which a jump crosses or ends on the boundary.  A hot loop whose closing cmp+jne lands
    there runs from the legacy decoders: the float32 convolution's inner loop, identical
    instruction for instruction, ran 1.3x slower after an unrelated edit moved it (issue 14,
    benchmarks/RESULTS.md).  The assembler pads such jumps instead; on other CPUs the padding
    is a few nops outside the loops' bodies."""
    import platform
    import shlex
    import subprocess
    import sysconfig

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return []
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    for flag in ("-Wa,-mbranches-within-32B-boundaries", "-mbranches-within-32B-boundaries"):
        try:
            probe = subprocess.run(cc + [flag, "-x", "c", "-c", "-", "-o", os.devnull],
                                   input=b"int f(void) { return 0; }\n", capture_output=True,
                                   timeout=120)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0 and not probe.stderr.strip():
            return [flag]
    return []


def extensions():
    from Cython.Build import cythonize

    compile_args = ["-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off"]
    compile_args += branch_alignment_flags()
    link_args = ["-fopenmp"]
    march = os.environ.get("ADDERCORE_MARCH", "native")
    if march:
        compile_args.append(f"-march={march}")
    sanitize = os.environ.get("ADDERCORE_SANITIZE", "")
    if sanitize:
        compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-O1"]
        link_args += [f"-fsanitize={sanitize}"]
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if os.environ.get("ADDERCORE_AVX512", "") == "1":
        macros.append(("ADDERCORE_AVX512", "1"))
    elif os.environ.get("ADDERCORE_AVX512", "") == "0":
        macros.append(("ADDERCORE_NO_AVX512", "1"))
    debug_checks = os.environ.get("ADDERCORE_BOUNDSCHECK", "") == "1"
    directives = {
        "language_level": 3,
        "boundscheck": debug_checks,
        "wraparound": debug_checks,
        "initializedcheck": debug_checks,
        "cdivision": True,
    }
    exts = []
    for pyx in sorted(EXT_DIR.glob("*.pyx")):
        exts.append(
            Extension(
                f"addercore_ext.{pyx.stem}",
                [str(pyx.relative_to(HERE))],
                include_dirs=[np.get_include(), str(EXT_DIR)],
                # headers are not tracked by setuptools: list them so edits trigger a rebuild
                depends=[str(h.relative_to(HERE)) for h in sorted(EXT_DIR.glob("*.h"))],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                define_macros=macros,
            )
        )
    return cythonize(exts, compiler_directives=directives, quiet=True)


if sys.platform == "win32":  # pragma: no cover - OpenMP flags above are gcc/clang spellings
    raise SystemExit("addercore's build supports gcc/clang toolchains (Linux, macOS with libomp).")

setup(ext_modules=extensions())
