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

- :func:`cifar_globals` — numpy array reconstruction exactly as numpy's own pickling writes
  it: ``_reconstruct(ndarray, (0,), ...)`` followed by ``BUILD`` with the array's bytes (the
  form of the real CIFAR batches), ``_frombuffer`` (protocol 5), ``scalar``, ``dtype``, under
  both ``numpy.core`` and ``numpy._core``; ``_codecs.encode`` restricted to latin-1 and
  ``bytes()`` without arguments (how Python 3 pickles non-empty / empty ``bytes`` at
  protocol 2). ``numpy.ndarray`` itself cannot be called (it would accept a 1-byte buffer with
  zero strides, or no buffer at all and hand back uninitialised memory); every array's
  buffer length is checked against shape x itemsize before numpy sees it; only plain
  (non-structured, non-object) dtypes are admitted.
- :class:`BoundedReader` — caps every read of a pickle stream at the bytes the file really
  holds, so a length field declaring 2**40 bytes costs nothing (the pickle then ends early).
- PyTorch names are mapped to stand-ins by :mod:`addercore.io` (torch is never imported).
"""
import _codecs
import io
import math
import os
import pickle

import numpy as np

__all__ = [
    "RefusedGlobalError",
    "RestrictedUnpickler",
    "restricted_load",
    "restricted_loads",
    "cifar_globals",
    "BoundedReader",
    "plain_array",
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
    refusal : callable(module, name) -> exception or None — lets a loader raise a more
        specific :class:`RefusedGlobalError` subclass (e.g. "this is a pickled whole model").
    """

    def __init__(self, file, allowed, *, persistent_load=None, encoding="ASCII",
                 errors="strict", what="pickle", refusal=None):
        super().__init__(file, encoding=encoding, errors=errors)
        self._allowed = dict(allowed)
        self._persistent = persistent_load
        self._what = what
        self._refusal = refusal

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            pass
        if self._refusal is not None:
            err = self._refusal(module, name)
            if err is not None:
                raise err
        raise RefusedGlobalError(
            f"refused global '{module}.{name}' in {self._what}: it is not on the allow-list "
            f"of this loader (allowed: {', '.join(sorted(m + '.' + n for m, n in self._allowed))}). "
            "The file was not trusted and nothing in it was executed.")

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


# --- bounded reads -------------------------------------------------------------------------

class BoundedReader(io.RawIOBase):
    """Read-only wrapper that never returns (or asks the underlying file for) more than
    ``limit`` bytes in total.

    The pickle machine trusts length fields: ``BINUNICODE8``/``BINBYTES8``/``FRAME`` with a
    declared length of 2**40 make ``file.read(2**40)`` allocate that much before finding the
    file shorter (an empty ``MemoryError``). Behind this wrapper such a read returns what the
    file holds and the unpickler reports a truncated pickle instead. ``limit=None`` takes the
    rest of a regular file (its size minus the current position).
    """

    def __init__(self, f, limit=None):
        super().__init__()
        if limit is None:
            limit = os.fstat(f.fileno()).st_size - f.tell()
        self._f = f
        self._left = max(0, int(limit))

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n) if n else b""
        self._left -= len(data)
        return data

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, size=-1):
        # Lines only occur in text opcodes (GLOBAL, INT, ...): a bounded scan, byte by byte
        # from a buffer of at most 64 KiB, is plenty and never reads past ``limit``.
        cap = min(self._left, 1 << 16 if size is None or size < 0 else size)
        out = bytearray()
        while len(out) < cap:
            c = self.read(1)
            if not c:
                break
            out += c
            if c == b"\n":
                break
        return bytes(out)


# --- numpy / bytes stand-ins ---------------------------------------------------------------

def _latin1_encode(obj, encoding="latin1", errors="strict"):
    # Python 3 pickles ``bytes`` at protocol <= 2 as _codecs.encode(str, 'latin1'); allow
    # exactly that, not arbitrary codecs (some codecs, e.g. 'rot13' or compression ones, could
    # be abused for resource exhaustion).
    if encoding not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError(
            f"refused _codecs.encode call with encoding {encoding!r} on {type(obj).__name__}")
    return _codecs.encode(obj, "latin1", errors)


def _empty_bytes(*args):
    # Python 3 pickles b"" at protocol <= 2 as ``__builtin__.bytes()``, e.g. the data of a
    # zero-image batch. bytes(n) would allocate n bytes: only the argument-less call is admitted.
    if args:
        raise pickle.UnpicklingError(
            f"refused bytes(...) with arguments {tuple(type(a).__name__ for a in args)}: only "
            "bytes() (an empty byte string) occurs in numpy/CIFAR pickles")
    return b""


_PLAIN_KINDS = "biufcSU"


def _plain_dtype(dt, what="dtype"):
    """Return a freshly built copy of ``dt`` if it is a plain dtype, else refuse.

    Plain: a bool/int/uint/float/complex/bytes/str scalar type, no fields, no sub-array, no
    objects. Rebuilding from ``dt.str`` discards whatever a pickled ``dtype.__setstate__`` may
    have set (flags, names, metadata).
    """
    if not isinstance(dt, np.dtype):
        raise pickle.UnpicklingError(f"{what} is {type(dt).__name__}, expected a numpy dtype")
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None or dt.kind not in _PLAIN_KINDS:
        raise pickle.UnpicklingError(
            f"refused numpy dtype {dt!r}: only plain numeric/bytes/str dtypes are allowed "
            "(no object, structured or sub-array dtypes)")
    clean = np.dtype(dt.str)
    if clean.itemsize != dt.itemsize:
        raise pickle.UnpicklingError(f"refused numpy dtype {dt!r}: inconsistent item size")
    return clean


def _safe_dtype(obj, align=False, copy=False):
    if not isinstance(obj, (str, bytes)):
        raise pickle.UnpicklingError(
            f"refused numpy.dtype({type(obj).__name__}): only a type string such as 'u1' is allowed")
    if isinstance(obj, bytes):
        obj = obj.decode("latin1")
    try:
        dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    except (TypeError, ValueError) as e:
        raise pickle.UnpicklingError(f"refused numpy.dtype({obj!r}): {e}") from None
    # Object arrays would let the file supply arbitrary Python objects as array elements.
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refused numpy dtype {dt!r}: object dtypes are not allowed")
    _plain_dtype(dt)
    return dt


def _checked_shape(shape):
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise pickle.UnpicklingError(f"array shape {shape!r} is not a tuple of non-negative ints")
    if len(shape) > 64:
        raise pickle.UnpicklingError(f"array shape has {len(shape)} dimensions (numpy allows 64)")
    return shape


def _check_buffer(buf, shape, dt):
    """The buffer must hold exactly shape x itemsize bytes (checked with Python ints)."""
    need = math.prod(shape) * dt.itemsize
    have = memoryview(buf).nbytes
    if have != need:
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dt} needs {need} bytes, its buffer holds {have}")


class _UnpickledArray(np.ndarray):
    """What ``_reconstruct`` returns: an empty array whose ``BUILD`` state is checked.

    numpy's ``ndarray.__setstate__`` trusts the dtype it is given; this subclass vets the shape,
    rebuilds the dtype from its type string and checks the buffer length first. Use
    :func:`plain_array` to turn it (or any array) into a base-class ``ndarray`` view.
    """

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("array state is not a 4- or 5-tuple")
        version, rest = (state[0], state[1:]) if len(state) == 5 else (1, state)
        shape, dt, fortran, raw = rest
        shape = _checked_shape(shape)
        dt = _plain_dtype(dt, "array dtype")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError(
                f"array data is {type(raw).__name__}, expected bytes (object arrays are refused)")
        _check_buffer(raw, shape, dt)
        np.ndarray.__setstate__(self, (version, shape, dt, bool(fortran), raw))


class _NDArrayClass:
    """Stand-in for the global ``numpy.ndarray``: only usable as ``_reconstruct``'s first
    argument. Calling it (``ndarray(shape, dtype, buffer, offset, strides)``) is refused."""

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(
            "refused call numpy.ndarray(...): an array is only admitted in the form numpy's "
            "pickling writes (_reconstruct + state), whose buffer length is checked")

    def __repr__(self):
        return "<numpy.ndarray stand-in>"


_NDARRAY = _NDArrayClass()


def plain_array(a):
    """Base-class ``np.ndarray`` view of an array from :func:`cifar_globals` (others unchanged)."""
    return a.view(np.ndarray) if isinstance(a, _UnpickledArray) else a


def _numpy_callables():
    a = np.zeros(1)
    reconstruct = a.__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    return reconstruct, scalar


def cifar_globals():
    """Allow-list for numpy-array pickles such as the CIFAR python batches.

    Covers files written by numpy 1.x (``numpy.core``) and 2.x (``numpy._core``), protocols
    0-5. Arrays come back as a subclass of ``np.ndarray`` (see :func:`plain_array`).
    """
    reconstruct, scalar = _numpy_callables()

    def _reconstruct(subtype, shape, dtype):
        # numpy pickles write _reconstruct(ndarray, (0,), b'b') and then BUILD the real state;
        # any other shape would allocate an uninitialised array of that shape.
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError(f"refused _reconstruct of {subtype!r}: only numpy.ndarray")
        if math.prod(_checked_shape(shape)) != 0:
            raise pickle.UnpicklingError(
                f"refused _reconstruct with shape {shape!r}: numpy's pickles start from an empty "
                "array (a non-empty one would be uninitialised memory)")
        return reconstruct(_UnpickledArray, (0,), np.uint8)

    def _scalar(dtype, obj=None):
        dt = _plain_dtype(dtype, "scalar dtype")
        if not isinstance(obj, bytes) or len(obj) != dt.itemsize:
            raise pickle.UnpicklingError(f"numpy scalar of {dt} needs {dt.itemsize} bytes")
        return scalar(dt, obj)

    def _frombuffer(buf, dtype, shape, order):
        dt = _plain_dtype(dtype, "array dtype")
        shape = _checked_shape(shape)
        if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
            raise pickle.UnpicklingError(f"array buffer is {type(buf).__name__}, expected bytes")
        if order not in ("C", "F"):
            raise pickle.UnpicklingError(f"array order {order!r} is not 'C' or 'F'")
        _check_buffer(buf, shape, dt)
        return np.frombuffer(buf, dtype=dt).reshape(shape, order=order)

    allowed = {
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _safe_dtype,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(mod + ".multiarray", "_reconstruct")] = _reconstruct
        allowed[(mod + ".multiarray", "scalar")] = _scalar
        allowed[(mod + ".numeric", "_frombuffer")] = _frombuffer
    return allowed
