"""Thread control shared by the OpenMP kernels and the BLAS pool.

``set_num_threads(n)`` sets both; ``num_threads(n)`` is the scoped version. Kernels read
:func:`get_num_threads` at each call, so the setting applies to the next call. Results never
depend on it: every kernel partitions work so that each output is summed by one thread in a
fixed order.  The BLAS pool (OpenBLAS, MKL, ...) is limited through threadpoolctl; with the
compiled backend a convolutional training step makes no BLAS call (convolutions run in the
OpenMP kernels), so the two pools never compete for cores (OpenBLAS's workers busy-wait
~0.1 s after each call, which on a 2-core machine stalls the next OpenMP region).

Python threads: the setting is **process-wide** (the BLAS pool is), and every change is made
under one lock. Overlapping ``with num_threads(...)`` blocks in several Python threads form
one stack in entry order: while blocks are active the most recently entered one applies, and
when a block exits the setting returns to the most recent block still active, or — after the
last one — to the value from before the first. So blocks that exit out of order never leave a
stale count behind (the old save/restore did: two overlapping blocks could leave 5 where 2
had been set). A thread that needs its *own* count while others change it should not share
the process: the count is global, like the BLAS pool it drives.
"""
import contextlib
import os
import threading

from threadpoolctl import threadpool_limits

_lock = threading.RLock()
_num_threads = None   # the value outside any num_threads() block (None: the usable cores)
_blocks = []          # active num_threads() blocks, in entry order: [token, n]
_blas_original = None  # threadpoolctl limiter holding the BLAS setting from before the first block


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
    blocks = _blocks  # a list read is atomic under the GIL; writers hold _lock
    if blocks:
        try:
            return blocks[-1][1]
        except IndexError:  # emptied between the two reads
            pass
    return _num_threads if _num_threads is not None else _default()


def set_num_threads(n):
    """Use ``n`` threads (int >= 1) for the OpenMP kernels and the BLAS pool.

    Inside a :func:`num_threads` block this changes that block's count (undone when the block
    exits, as before); outside, the process-wide default.
    """
    global _num_threads
    n = _check(n)
    with _lock:
        if _blocks:
            _blocks[-1][1] = n
        else:
            _num_threads = n
        threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def num_threads(n):
    """Context manager: run the block with ``n`` threads, then restore the previous setting
    (both the kernels' count and the BLAS pool's). Safe with overlapping blocks in several
    Python threads (see the module docstring for what "previous" means then)."""
    global _blas_original
    n = _check(n)
    token = object()
    with _lock:
        limiter = threadpool_limits(limits=n, user_api="blas")  # remembers the BLAS setting
        if not _blocks:
            _blas_original = limiter
        _blocks.append([token, n])
    try:
        yield
    finally:
        with _lock:
            i = next(i for i, b in enumerate(_blocks) if b[0] is token)
            del _blocks[i]
            if _blocks:
                threadpool_limits(limits=_blocks[-1][1], user_api="blas")
            else:
                _blas_original.restore_original_limits()
                _blas_original = None
