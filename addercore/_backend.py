"""Choose the kernel backend once: the compiled extension, or the numpy reference.

``ADDERCORE_BACKEND=numpy`` forces the reference; ``ADDERCORE_BACKEND=cython`` makes a missing
extension an error instead of a warning.
"""
import contextlib
import os
import warnings

_BACKEND = None
_FAST = None


def _load():
    global _BACKEND, _FAST
    requested = os.environ.get("ADDERCORE_BACKEND", "").strip().lower()
    if requested not in ("", "numpy", "cython"):
        raise ValueError(
            f"ADDERCORE_BACKEND must be 'numpy' or 'cython' (or unset), got {requested!r}"
        )
    if requested == "numpy":
        _BACKEND, _FAST = "numpy", None
        return
    try:
        from .ops import fast
    except ImportError as exc:
        if requested == "cython":
            raise ImportError(
                "ADDERCORE_BACKEND=cython but the compiled extension addercore_ext could not be "
                f"imported ({exc}); reinstall with `pip install .`"
            ) from exc
        warnings.warn(
            "addercore: compiled kernels (addercore_ext) unavailable "
            f"({exc}); using the slow numpy reference kernels.",
            RuntimeWarning,
            stacklevel=3,
        )
        _BACKEND, _FAST = "numpy", None
        return
    _BACKEND, _FAST = "cython", fast


def backend():
    """Name of the active kernel backend: ``"cython"`` or ``"numpy"``."""
    if _BACKEND is None:
        _load()
    return _BACKEND


def fast_module():
    """The module of compiled implementations, or None on the numpy backend."""
    if _BACKEND is None:
        _load()
    return _FAST


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the block on backend ``name`` ("numpy" or "cython"), then restore.

    Used by :mod:`addercore.golden` to generate golden values on the numpy reference path.
    Not thread-safe (it switches the process-wide choice).
    """
    global _BACKEND, _FAST
    if name not in ("numpy", "cython"):
        raise ValueError(f"backend must be 'numpy' or 'cython', got {name!r}")
    if _BACKEND is None:
        _load()
    previous = (_BACKEND, _FAST)
    if name == "numpy":
        _BACKEND, _FAST = "numpy", None
    else:
        from .ops import fast  # ImportError when the extension is not compiled

        _BACKEND, _FAST = "cython", fast
    try:
        yield
    finally:
        _BACKEND, _FAST = previous
