"""A restricted unpickler: only an explicit allow-list of globals can be loaded.

Plain :func:`pickle.load` executes whatever callables a file names (``os.system`` through
``__reduce__`` is the classic attack), so addercore never uses it on files. Every pickle it
reads (CIFAR batches, PyTorch checkpoints) goes through :class:`RestrictedUnpickler`, whose
``find_class`` maps ``(module, name)`` to an object from a per-use allow-list and refuses
everything else with :class:`RefusedGlobalError` before anything is called.

Why this is enough: the pickle VM can only call objects it obtained from ``find_class`` (or
from ``persistent_load``, which the caller controls); it has no attribute-access opcode, so an
allowed class cannot be used to reach anything else. Dotted names (protocol 4) are looked up
verbatim, so ``collections.OrderedDict.fromkeys``-style names are refused too.

Allow-lists provided here:

- :func:`cifar_globals` — numpy array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``,
  ``scalar``, ``_frombuffer``, under both ``numpy.core`` and ``numpy._core``) and
  ``_codecs.encode`` restricted to latin-1 (how Python 3 pickles ``bytes`` at protocol 2).
  Object dtypes are refused.
- PyTorch names are mapped to stand-ins by :mod:`addercore.io` (torch is never imported).
"""
import _codecs
import io
import pickle

import numpy as np

__all__ = [
    "RefusedGlobalError",
    "RestrictedUnpickler",
    "restricted_load",
    "restricted_loads",
    "cifar_globals",
]


class RefusedGlobalError(pickle.UnpicklingError, ValueError):
    """A pickle named a global that is not on the allow-list (nothing was executed).

    Subclasses both :class:`pickle.UnpicklingError` and :class:`ValueError` so that callers
    treating "bad file" as ``ValueError`` catch it too.
    """


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals only through ``allowed``.

    Parameters
    ----------
    file : binary file object
    allowed : mapping ``(module, name) -> object`` — what ``find_class`` may return.
    persistent_load : callable(pid) or None — handler for persistent IDs; ``None`` refuses them.
    encoding, errors : as for :class:`pickle.Unpickler` (Python 2 ``str`` decoding).
    what : str — a description of the file, used in error messages.
    """

    def __init__(self, file, allowed, *, persistent_load=None, encoding="ASCII",
                 errors="strict", what="pickle"):
        super().__init__(file, encoding=encoding, errors=errors)
        self._allowed = dict(allowed)
        self._persistent = persistent_load
        self._what = what

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobalError(
                f"refused global '{module}.{name}' in {self._what}: it is not on the allow-list "
                f"of this loader (allowed: {', '.join(sorted(m + '.' + n for m, n in self._allowed))}). "
                "The file was not trusted and nothing in it was executed."
            ) from None

    def persistent_load(self, pid):
        if self._persistent is None:
            raise pickle.UnpicklingError(
                f"{self._what}: unexpected persistent id {pid!r} (not allowed for this file type)")
        return self._persistent(pid)


def restricted_load(file, allowed, **kwargs):
    """Load one pickle from binary ``file`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(file, allowed, **kwargs).load()


def restricted_loads(data, allowed, **kwargs):
    """Load one pickle from ``data`` (bytes) with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, **kwargs).load()


# --- numpy / bytes stand-ins ---------------------------------------------------------------

def _latin1_encode(obj, encoding="latin1", errors="strict"):
    # Python 3 pickles ``bytes`` at protocol <= 2 as _codecs.encode(str, 'latin1'); allow
    # exactly that, not arbitrary codecs (some codecs, e.g. 'rot13' or compression ones, could
    # be abused for resource exhaustion).
    if encoding not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError(
            f"refused _codecs.encode call with encoding {encoding!r} on {type(obj).__name__}")
    return _codecs.encode(obj, "latin1", errors)


def _safe_dtype(*args, **kwargs):
    dt = np.dtype(*args, **kwargs)
    # Object arrays would let the file supply arbitrary Python objects as array elements.
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refused numpy dtype {dt!r}: object dtypes are not allowed")
    return dt


def _numpy_callables():
    a = np.zeros(1)
    reconstruct = a.__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = a.__reduce_ex__(5)[0]
    return reconstruct, scalar, frombuffer


def cifar_globals():
    """Allow-list for numpy-array pickles such as the CIFAR python batches.

    Covers files written by numpy 1.x (``numpy.core``) and 2.x (``numpy._core``).
    """
    reconstruct, scalar, frombuffer = _numpy_callables()
    allowed = {
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(mod + ".multiarray", "_reconstruct")] = reconstruct
        allowed[(mod + ".multiarray", "scalar")] = scalar
        allowed[(mod + ".numeric", "_frombuffer")] = frombuffer
    return allowed
