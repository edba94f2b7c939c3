# cython: language_level=3
"""Build facts of the compiled extension: proves the Cython + OpenMP toolchain works."""
cimport openmp


def openmp_max_threads():
    """Number of threads OpenMP would use for a parallel region (int)."""
    return openmp.omp_get_max_threads()


def compiled():
    """True: this module only exists when the extension was built."""
    return True
