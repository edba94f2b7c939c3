"""Thread control shared by the OpenMP kernels and the BLAS pool.

``set_num_threads(n)`` sets both; ``num_threads(n)`` is the scoped version. Kernels read
:func:`get_num_threads` at each call, so the setting applies to the next call. Results never
depend on it: every kernel partitions work so that each output is summed by one thread in a
fixed order.  The BLAS pool (OpenBLAS, MKL, ...) is limited through threadpoolctl; with the
compiled backend a convolutional training step makes no BLAS call (convolutions run in the
OpenMP kernels), so the two pools never compete for cores (OpenBLAS's workers busy-wait
~0.1 s after each call, which on a 2-core machine stalls the next OpenMP region).
"""
import contextlib
import os

from threadpoolctl import threadpool_limits

_num_threads = None


def _default():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _check(n):
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"n must be an int >= 1, got {type(n).__name__}")
    n = int(n.__index__())
    if n < 1:
        raise ValueError(f"n must be an int >= 1, got {n}")
    return n


def get_num_threads():
    """Number of threads the kernels and BLAS use (int >= 1); default: the usable cores."""
    return _num_threads if _num_threads is not None else _default()


def set_num_threads(n):
    """Use ``n`` threads (int >= 1) for the OpenMP kernels and the BLAS pool."""
    global _num_threads
    n = _check(n)
    _num_threads = n
    threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def num_threads(n):
    """Context manager: run the block with ``n`` threads, then restore the previous setting
    (both the kernels' count and the BLAS pool's)."""
    global _num_threads
    n = _check(n)
    previous = _num_threads
    limiter = threadpool_limits(limits=n, user_api="blas")  # remembers the BLAS setting
    _num_threads = n
    try:
        yield
    finally:
        _num_threads = previous
        limiter.restore_original_limits()
