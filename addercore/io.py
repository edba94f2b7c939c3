"""Checkpoint I/O: PyTorch checkpoints without PyTorch, and addercore's own ``.npz`` files.

- :func:`load_torch_checkpoint` reads ``.pth``/``.pt`` files written by ``torch.save`` in the
  legacy (pre-1.6) format and the current zip format, through a restricted unpickler: only the
  handful of globals tensors need are admitted, mapped to local stand-ins; torch is never
  imported and a malicious file cannot execute code (:class:`~addercore.safe_pickle.RefusedGlobalError`).
- :func:`save` / :func:`load` write and read addercore checkpoints: a plain ``.npz`` (no
  pickles; metadata is a JSON string array) written atomically.
- :func:`atomic_open` / :func:`atomic_write_bytes`: write to a temporary file in the target
  directory, flush, fsync, ``os.replace``, fsync the directory. A crash at any point leaves
  either the old file or the new one, never a torn file.
"""
import collections
import contextlib
import errno
import json
import math
import os
import pickle
import secrets
import struct
import warnings
import zipfile

import numpy as np

from .safe_pickle import BoundedReader, RefusedGlobalError, RestrictedUnpickler

__all__ = [
    "load_torch_checkpoint",
    "load_torch_object",
    "save_torch_checkpoint",
    "check_state_values",
    "default_max_bytes",
    "PickledModelError",
    "StateValueError",
    "strip_prefix",
    "atomic_open",
    "atomic_write_bytes",
    "save",
    "load",
    "METADATA_KEY",
]

# --------------------------------------------------------------------------------------------
# PyTorch checkpoints
# --------------------------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype (little-endian; byte order fixed up when needed).
# BFloat16 has no numpy dtype: it is read as uint16 and widened to float32 exactly.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
    "UntypedStorage": np.uint8,
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.: only carries the element dtype."""

    def __init__(self, name):
        self.name = name
        self.bfloat16 = _STORAGE_DTYPES[name] == "bfloat16"
        self.dtype = np.dtype(np.uint16 if self.bfloat16 else _STORAGE_DTYPES[name])

    def __repr__(self):
        return f"<torch.{self.name} stand-in>"


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy format).

    ``data`` is a 1-D numpy array of ``numel`` elements once known; ``base``/``offset`` describe
    a legacy view into a root storage.
    """

    def __init__(self, stype, key, numel, base=None, offset=0):
        self.stype = stype
        self.key = key
        self.numel = int(numel)
        self.base = base
        self.offset = int(offset)
        self._data = None

    @property
    def data(self):
        if self.base is not None:
            return self.base.data[self.offset:self.offset + self.numel]
        if self._data is None:
            raise ValueError(f"storage {self.key!r} has no data (file truncated or corrupt)")
        return self._data


class _Budget:
    """Bytes a load may allocate for array data (storages and materialised tensors).

    Every allocation is charged *before* it happens; going over raises ValueError naming the
    file, so a small file can never cost gigabytes (see :func:`default_max_bytes`).
    """

    def __init__(self, path, limit):
        self.path, self.limit, self.used = path, int(limit), 0

    def charge(self, nbytes, what):
        nbytes = int(nbytes)
        if nbytes < 0 or self.used + nbytes > self.limit:
            raise ValueError(
                f"{self.path}: {what} needs {nbytes} bytes, more than this file may allocate "
                f"({self.limit - self.used} of the limit of {self.limit} bytes left; the limit is "
                f"16 x the file size + 64 MiB unless max_bytes= is given)")
        self.used += nbytes


def default_max_bytes(file_size):
    """Default memory limit for decoding a file of ``file_size`` bytes: 16x + 64 MiB.

    Uncompressed checkpoints decode to about their own size; deflated real weights inflate by
    ~1.1x; 16x leaves room for compressed zero-filled buffers and broadcast tensors while a
    crafted file stays far from gigabytes. Pass ``max_bytes=`` to the loaders to change it.
    """
    return 16 * int(file_size) + _SLACK_BYTES


_SLACK_BYTES = 64 << 20
_MAX_DEPTH = 64  # nesting levels of lists/dicts/tuples accepted around tensors


def _non_overlapping(size, stride):
    """True if distinct indices of (size, stride) address distinct elements.

    Sufficient condition used by torch/numpy: sorted by stride, each stride exceeds the span
    of all smaller-stride dimensions. Dimensions of extent 1 never overlap.
    """
    dims = sorted((st, sz) for sz, st in zip(size, stride) if sz > 1)
    span = 0
    for st, sz in dims:
        if st <= span:
            return False
        span += (sz - 1) * st
    return True


class _LazyTensor:
    """Result of ``_rebuild_tensor_v2`` before storage bytes are available."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(
                f"tensor rebuilt from {type(storage).__name__}, expected a storage")
        self.storage = storage
        self.offset = _int(offset, "tensor storage offset")
        self.size = tuple(_int(s, "tensor size") for s in _seq(size, "tensor size"))
        self.stride = tuple(_int(s, "tensor stride") for s in _seq(stride, "tensor stride"))
        if len(self.size) != len(self.stride):
            raise pickle.UnpicklingError(f"tensor size {self.size} and stride {self.stride} differ in rank")
        if len(self.size) > 64:
            raise pickle.UnpicklingError(f"tensor has {len(self.size)} dimensions (at most 64)")
        self._array = None

    def materialize(self, budget):
        if self._array is not None:  # one tensor object referenced twice: one array (tied weights)
            return self._array
        st = self.storage
        flat = st.data
        item = flat.itemsize
        if any(d < 0 for d in self.size):
            raise ValueError(f"tensor with negative size {self.size}")
        n = math.prod(self.size)  # Python ints: no int64 overflow for 2**40 x 2**40
        if n == 0:
            arr = np.zeros(self.size, dtype=flat.dtype)
        else:
            # Bounds check before as_strided: a corrupt file must not read outside the storage.
            # torch never writes negative strides.
            if any(s < 0 for s in self.stride) or self.offset < 0:
                raise ValueError(f"tensor with negative stride/offset {self.stride}/{self.offset}")
            last = self.offset + sum((d - 1) * s for d, s in zip(self.size, self.stride))
            if last >= flat.shape[0]:
                raise ValueError(
                    f"tensor of size {self.size}, stride {self.stride}, offset {self.offset} "
                    f"reaches element {last} of a storage with {flat.shape[0]} elements")
            overlap = not _non_overlapping(self.size, self.stride)
            what = (f"tensor of size {self.size} with overlapping/broadcast strides {self.stride} "
                    f"over a storage of {flat.shape[0]} elements" if overlap
                    else f"tensor of size {self.size}")
            budget.charge(n * item * (2 if st.stype.bfloat16 else 1), what)
            view = np.lib.stride_tricks.as_strided(
                flat[self.offset:], shape=self.size,
                strides=tuple(s * item for s in self.stride), writeable=False)
            arr = np.array(view, order="C")  # copy: contiguous, owns its memory
        if st.stype.bfloat16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        self._array = arr
        return arr


def _int(x, what):
    if isinstance(x, bool) or not isinstance(x, int):
        raise pickle.UnpicklingError(f"{what} is {type(x).__name__}, expected int")
    return x


def _seq(x, what):
    if not isinstance(x, (tuple, list)):
        raise pickle.UnpicklingError(f"{what} is {type(x).__name__}, expected a tuple")
    return x


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data  # a Parameter is just its tensor here


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)  # drop the subclass (Tensor/Parameter) and its Python state


def _torch_globals():
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): "Tensor",
        ("torch.nn.parameter", "Parameter"): "Parameter",
    }
    for name in _STORAGE_DTYPES:
        st = _StorageType(name)
        allowed[("torch", name)] = st
        allowed[("torch.cuda", name)] = st  # very old files name the CUDA storage class
    allowed[("torch.storage", "UntypedStorage")] = allowed[("torch", "UntypedStorage")]
    return allowed


class PickledModelError(RefusedGlobalError):
    """The file holds a pickled whole model (``torch.save(model)``), not a state dict.

    Loading it would mean running the model's own code; nothing was executed. Re-save the
    weights with PyTorch: ``torch.save(model.state_dict(), path)``.
    """


def _model_refusal(path):
    def refusal(module, name):
        # torch.save(model) pickles the model's class (and its submodules' classes) as globals:
        # __main__.Net, resnet20.ResNet, torch.nn.modules.conv.Conv2d ... Classes are named in
        # CamelCase; functions such as os.system get the plain refusal.
        if not (module == "__main__" or module.startswith("torch.nn.")
                or (module, name) in (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"))
                or name[:1].isupper()):
            return None
        return PickledModelError(
            f"refused global '{module}.{name}' in {path}: this looks like a pickled whole model "
            "(written by torch.save(model)), not a state dict; loading it would run the model's "
            "code, so nothing in it was executed. Re-save the weights only, in PyTorch with the "
            "model's code available: model = torch.load(path, weights_only=False); "
            "torch.save(model.state_dict(), 'weights.pth')")
    return refusal


def _pid_tuple(pid):
    if not isinstance(pid, tuple) or not pid:
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id kind {kind!r}")
    return pid[1:]


def _check_stype(stype):
    if not isinstance(stype, _StorageType):
        raise pickle.UnpicklingError(f"persistent id names {stype!r}, not a storage type")
    return stype


def _resolve(obj, budget, depth=0, memo=None):
    """Replace every _LazyTensor in a nested structure by its numpy array.

    Shared sub-structures (pickle memo references) are resolved once, so a "billion laughs"
    list of lists costs its size in the file, not 2**depth; nesting is limited to 64 levels.
    """
    if memo is None:
        memo = {}
    if isinstance(obj, _LazyTensor):
        return obj.materialize(budget)
    if isinstance(obj, (_Storage, _StorageType)):
        raise ValueError("bare storages are not supported outside tensors")
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    if id(obj) in memo:
        return memo[id(obj)]
    if depth >= _MAX_DEPTH:
        raise ValueError(f"containers nested more than {_MAX_DEPTH} levels deep")
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v, budget, depth + 1, memo)
    else:
        out = [_resolve(v, budget, depth + 1, memo) for v in obj]
        if isinstance(obj, tuple):
            out = tuple(out)
    memo[id(obj)] = out
    return out


def _load_legacy(f, path, budget):
    allowed = _torch_globals()
    plain = {}  # the three header pickles only hold ints/dicts
    size = os.fstat(f.fileno()).st_size

    def left():
        return size - f.tell()

    def header(what):
        return RestrictedUnpickler(BoundedReader(f, left()), plain, what=f"{path} ({what})").load()

    magic = header("magic number")
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a PyTorch checkpoint (bad magic number {magic!r})")
    proto = header("protocol version")
    if proto != _LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported legacy protocol version {proto!r} (expected 1001)")
    sys_info = header("sys_info")
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True

    storages = {}

    def persistent_load(pid):
        data = _pid_tuple(pid)
        if len(data) != 5:
            raise pickle.UnpicklingError(f"legacy storage id has {len(data)} fields, expected 5")
        stype, key, _location, numel, view = data
        stype = _check_stype(stype)
        numel = _int(numel, "storage size")
        if key not in storages:
            storages[key] = _Storage(stype, key, numel)
        root = storages[key]
        if view is None:
            return root
        view_key, offset, view_size = _seq(view, "storage view")
        if view_key not in storages:
            storages[view_key] = _Storage(stype, view_key, _int(view_size, "view size"), base=root,
                                          offset=_int(offset, "view offset"))
        return storages[view_key]

    obj = RestrictedUnpickler(BoundedReader(f, left()), allowed, persistent_load=persistent_load,
                              encoding="utf-8", what=f"{path}", refusal=_model_refusal(path)).load()
    keys = RestrictedUnpickler(BoundedReader(f, left()), plain, what=f"{path} (storage keys)").load()
    if not isinstance(keys, list):
        raise ValueError(f"{path}: storage key list is {type(keys).__name__}, expected list")
    for key in keys:
        st = storages.get(key) if isinstance(key, (str, int, bytes)) else None
        if st is None or st.base is not None:
            raise ValueError(f"{path}: storage key {key!r} was not referenced by the pickle")
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: truncated before the data of storage {key!r}")
        (numel,) = struct.unpack("<q" if little else ">q", head)
        if numel != st.numel:
            raise ValueError(f"{path}: storage {key!r} holds {numel} elements, expected {st.numel}")
        dt = st.stype.dtype.newbyteorder("<" if little else ">")
        nbytes = numel * dt.itemsize
        # Sizes come from the file: check them against the bytes it really has before reading.
        if nbytes < 0 or nbytes > left():
            raise ValueError(f"{path}: truncated in the data of storage {key!r} (declares "
                             f"{numel} elements = {nbytes} bytes, the file has {left()} left)")
        budget.charge(nbytes, f"storage {key!r}")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"{path}: truncated in the data of storage {key!r} "
                             f"({len(raw)} of {nbytes} bytes)")
        st._data = np.frombuffer(raw, dtype=dt)
    return obj


def _zip_entry(zf, name, path, budget, max_size=None, what=None):
    """ZipInfo of ``name`` after checking it can be read safely (before any inflation)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{path}: missing record {name!r}") from None
    what = what or f"record {name!r}"
    if info.flag_bits & 0x1:
        raise ValueError(f"{path}: {what} is encrypted (not something torch.save writes)")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"{path}: {what} uses zip compression method {info.compress_type}; "
                         "only stored (torch.save) and deflated records are read")
    if max_size is not None and info.file_size > max_size:
        raise ValueError(f"{path}: {what} is {info.file_size} bytes (at most {max_size} expected)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(f"{path}: {what} is stored with {info.compress_size} bytes but declares "
                         f"{info.file_size}")
    return info


def _read_entry(zf, info, path, nbytes, what):
    """Read exactly ``nbytes`` from a checked entry (CRC verified by zipfile at the end)."""
    with zf.open(info) as f:
        raw = f.read(nbytes)
        extra = f.read(1)
    if len(raw) != nbytes or extra:
        raise ValueError(f"{path}: {what} holds {len(raw) + len(extra)}{'+' if extra else ''} "
                         f"bytes, expected {nbytes}")
    return raw


def _load_zip(path, budget):
    allowed = _torch_globals()
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        pkls = sorted(n for n in names if n == "data.pkl" or n.endswith("/data.pkl"))
        if not pkls:
            raise ValueError(f"{path}: zip file without data.pkl, not a PyTorch checkpoint")
        pkl = min(pkls, key=len)
        prefix = pkl[: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            info = _zip_entry(zf, prefix + "byteorder", path, budget, max_size=16)
            order = _read_entry(zf, info, path, info.file_size, "byteorder record").strip()
            if order not in (b"little", b"big"):
                raise ValueError(f"{path}: byteorder record holds {order[:16]!r}, expected little/big")
            little = order != b"big"
        storages = {}

        def persistent_load(pid):
            data = _pid_tuple(pid)
            if len(data) != 4:
                raise pickle.UnpicklingError(f"zip storage id has {len(data)} fields, expected 4")
            stype, key, _location, numel = data
            stype = _check_stype(stype)
            if not isinstance(key, (str, int)):
                raise pickle.UnpicklingError(f"storage key is {type(key).__name__}, expected str")
            if key not in storages:
                name = f"{prefix}data/{key}"
                if name not in names:
                    raise ValueError(f"{path}: missing storage record {name!r}")
                info = _zip_entry(zf, name, path, budget, what=f"storage record {name!r}")
                dt = stype.dtype.newbyteorder("<" if little else ">")
                if stype.name == "UntypedStorage":
                    numel = info.file_size
                numel = _int(numel, "storage size")
                nbytes = numel * dt.itemsize
                # Declared size vs. the zip directory's uncompressed size, before inflating.
                if nbytes < 0 or info.file_size != nbytes:
                    raise ValueError(f"{path}: storage {name!r} has {info.file_size} bytes, "
                                     f"expected {nbytes}")
                budget.charge(nbytes, f"storage record {name!r}")
                st = _Storage(stype, key, numel)
                st._data = np.frombuffer(_read_entry(zf, info, path, nbytes, f"storage {name!r}"),
                                         dtype=dt)
                storages[key] = st
            return storages[key]

        info = _zip_entry(zf, pkl, path, budget, what=f"pickle {pkl!r}")
        budget.charge(info.file_size, f"pickle {pkl!r}")
        with zf.open(info) as f:
            return RestrictedUnpickler(BoundedReader(f, info.file_size), allowed,
                                       persistent_load=persistent_load, encoding="utf-8",
                                       what=f"{path}:{pkl}", refusal=_model_refusal(path)).load()


def _named(path, e, kind):
    """The ValueError that reports exception ``e`` while reading ``path``."""
    if isinstance(e, ValueError) and path in str(e):
        return e
    if type(e) is ValueError:  # our own checks: the message says what is wrong
        return ValueError(f"{path}: {e}")
    if isinstance(e, MemoryError):
        detail = "it declares a size larger than memory"
    elif isinstance(e, RecursionError):
        detail = "nested too deeply"
    else:
        detail = str(e) or "no detail"
    return ValueError(f"{path}: truncated or corrupt {kind} ({type(e).__name__}: {detail})")


def load_torch_object(path, *, max_bytes=None):
    """Load any object saved with ``torch.save`` (restricted), tensors as numpy arrays.

    Returns the unpickled structure (dicts, lists, numbers, strings) with every tensor replaced
    by a C-contiguous numpy array of its dtype.

    Memory: sizes declared in the file are checked against its real size (and the zip
    directory's uncompressed sizes) before anything is read or allocated, and the arrays it
    decodes may not exceed ``max_bytes`` in total (default :func:`default_max_bytes`: 16x the
    file size + 64 MiB); tensors with overlapping or broadcast (stride 0) strides count at their
    materialised size.

    Raises ``FileNotFoundError``/``PermissionError`` as ``open`` does; ``ValueError`` naming the
    file for anything damaged, oversized or malformed (never an empty ``MemoryError``,
    ``RecursionError``, ``NotImplementedError`` ...); :class:`RefusedGlobalError` (a
    ``ValueError``) for disallowed globals, :class:`PickledModelError` for a whole pickled model.
    """
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size
        budget = _Budget(path, default_max_bytes(size) if max_bytes is None else max_bytes)
        if zipfile.is_zipfile(path):
            obj = _load_zip(path, budget)
        else:
            with open(path, "rb") as f:
                obj = _load_legacy(f, path, budget)
        return _resolve(obj, budget)
    except (RefusedGlobalError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # zipfile/zlib/pickle/struct errors, MemoryError, RecursionError, ...
        raise _named(path, e, "PyTorch checkpoint") from e


def load_torch_checkpoint(path, *, check_values="raise", max_bytes=None):
    """Read a PyTorch state dict file without PyTorch.

    Returns ``dict[str, np.ndarray]`` (insertion order of the file). A top-level dict holding
    ``state_dict`` (or ``model_state_dict``) is unwrapped. Supports the legacy and zip formats;
    float16/32/64, bfloat16 (widened to float32), int8/16/32/64, uint8 and bool tensors with any
    storage offset and stride. Keys are returned as saved (see :func:`strip_prefix`).

    check_values : "raise" (default), "warn" or "ignore" — what to do with complex weights,
        NaN/Inf values or a negative ``running_var`` (see :func:`check_state_values`).
    max_bytes : memory limit, see :func:`load_torch_object`.

    Errors: as :func:`load_torch_object`; :class:`StateValueError` (a ``ValueError``) for bad
    values when ``check_values="raise"``.
    """
    obj = load_torch_object(path, max_bytes=max_bytes)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    out = {}
    bad = []
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            out[str(k)] = v
        else:
            bad.append(f"{k!r} ({type(v).__name__})")
    if bad:
        raise ValueError(f"{path}: not a state dict of tensors; non-tensor entries: "
                         + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    check_state_values(out, path, on_error=check_values)
    return out


class StateValueError(ValueError):
    """Weights that cannot be meant: complex, NaN/Inf, or a negative BatchNorm ``running_var``."""


def check_state_values(state, path=None, on_error="raise"):
    """Check the values of a state dict (``dict[str, np.ndarray]``) before they are used.

    Flags: complex dtypes (AdderNet weights are real), NaN or ±Inf in floating arrays, and
    negative entries in any ``*running_var`` (a variance; BatchNorm would take its square root).
    Integer/bool arrays (``num_batches_tracked``, masks) are not inspected.

    on_error : "raise" → :class:`StateValueError` naming ``path`` and the first problems;
        "warn" → one ``RuntimeWarning`` with the same text; "ignore" → nothing.
    Returns the list of problems (strings; empty when all is well).
    """
    if on_error not in ("raise", "warn", "ignore"):
        raise ValueError(f"on_error must be 'raise', 'warn' or 'ignore', got {on_error!r}")
    problems = []
    for k, v in state.items():
        a = np.asarray(v)
        if a.dtype.kind == "c":
            problems.append(f"{k}: complex dtype {a.dtype}")
            continue
        if a.dtype.kind != "f" or a.size == 0:
            continue
        finite = np.isfinite(a)
        if not finite.all():
            nan = int(np.isnan(a).sum())
            problems.append(f"{k}: {nan} NaN and {int(a.size - finite.sum()) - nan} infinite "
                            f"of {a.size} values")
        if str(k).endswith("running_var"):
            neg = int((a < 0).sum())
            if neg:
                problems.append(f"{k}: {neg} negative variances (min {float(np.nanmin(a)):.4g})")
    if problems and on_error != "ignore":
        where = f"{os.fspath(path)}: " if path is not None else ""
        msg = (f"{where}{len(problems)} tensor(s) hold values no trained network has: "
               + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
        if on_error == "raise":
            raise StateValueError(msg + " (pass check_values='warn' or 'ignore' to load anyway)")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return problems


def strip_prefix(state, prefix="module."):
    """Return a new dict with ``prefix`` removed from every key that starts with it.

    ``DataParallel`` checkpoints prefix every key with ``module.``.
    """
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------

def _fsync_dir(dirname):
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _target_dir(path):
    """Directory that will hold ``path``; refuses targets that can never be written, naming them."""
    dirname = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path!r}: it is a directory", path)
    probe = dirname
    while probe and not os.path.exists(probe):  # the nearest existing ancestor
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot write {path!r}: {probe!r} is a file, not a folder", path)
    if not os.path.isdir(dirname):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path!r}: folder {dirname!r} "
                                "does not exist", path)
    return dirname


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EROFS,
                getattr(errno, "EDQUOT", errno.ENOSPC)}


def _named_oserror(e, path, doing):
    """Same OSError type and errno, with a one-line message naming ``path``."""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason += " (disk full; nothing was changed)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += f" (folder {os.path.dirname(os.path.abspath(path))!r} is not writable)"
    new = type(e)(e.errno, f"{doing} {path!r} failed: {reason}")
    new.filename = path
    return new


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Context manager yielding a file that replaces ``path`` atomically on success.

    Writes go to a temporary file in the same directory; on normal exit it is flushed,
    fsync'ed, renamed over ``path`` (``os.replace``) and the directory is fsync'ed. On an
    exception (including a full disk while writing, flushing or closing) the temporary file is
    removed and ``path`` is untouched. A process killed mid-way leaves ``path`` intact (plus at
    most a stale ``.<name>.<random>.tmp``).

    Errors: ``IsADirectoryError`` if ``path`` is a directory, ``NotADirectoryError`` if a
    component of its folder is a file, ``FileNotFoundError`` if the folder is missing,
    ``PermissionError`` for a read-only folder; an ``OSError`` while writing (e.g. ``ENOSPC``)
    is re-raised as the same type and errno with a message naming ``path`` — each a one-line
    message, checked before anything is written.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    dirname = _target_dir(path)
    tmp = os.path.join(dirname, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        # os.open with 0o666 lets the umask decide the permissions, like a plain open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _named_oserror(e, path, "creating a temporary file to write") from e
    f = None
    committing = False
    try:
        f = os.fdopen(fd, mode)
        yield f
        committing = True
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException as e:
        # Close without letting a second failure (a full disk fails the flush in close() again)
        # skip the unlink: the temporary file must not be left behind.
        with contextlib.suppress(OSError):
            if f is not None:
                f.close()
            else:
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # Name the target for failures of the write itself: ours (flush/fsync/close/rename),
        # or the caller's f.write() running out of space. Other errors pass unchanged.
        if isinstance(e, OSError) and e.errno is not None and (
                committing or e.errno in _DISK_ERRNOS):
            raise _named_oserror(e, path, "writing") from e
        raise
    _fsync_dir(dirname)


def atomic_write_bytes(path, data):
    """Atomically replace ``path`` with ``data`` (bytes); see :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def save_figure_png(fig, path, dpi=100):
    """Write a matplotlib figure ``fig`` to ``path`` as PNG at ``dpi``, atomically (an
    interrupted plot never leaves a truncated image behind); errors as :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)


# --------------------------------------------------------------------------------------------
# addercore .npz checkpoints
# --------------------------------------------------------------------------------------------

METADATA_KEY = "__metadata__"


def save(path, arrays, metadata=None):
    """Write ``arrays`` (dict str -> np.ndarray) and JSON ``metadata`` atomically as ``.npz``.

    No pickles: object arrays are refused, metadata is stored as a 0-d unicode array holding
    JSON, so :func:`load` works with ``allow_pickle=False``. The file is written uncompressed.
    """
    if not isinstance(arrays, dict):
        raise TypeError(f"save: arrays must be a dict str -> np.ndarray, got {type(arrays).__name__}")
    clean = {}
    for k, v in arrays.items():
        if not isinstance(k, str):
            raise TypeError(f"save: array names must be str, got {k!r} ({type(k).__name__})")
        if k == METADATA_KEY:
            raise ValueError(f"save: array name {METADATA_KEY!r} is reserved for metadata")
        a = np.asarray(v)
        if a.dtype.hasobject:
            raise TypeError(f"save: array {k!r} has object dtype; only numeric/bool arrays can be saved")
        clean[k] = a
    try:
        meta = json.dumps({} if metadata is None else metadata, allow_nan=True, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save: metadata must be JSON-serialisable ({e})") from e
    clean[METADATA_KEY] = np.array(meta)
    with atomic_open(path, "wb") as f:
        np.savez(f, **clean)


_MAX_NPY_HEADER = 10000  # numpy's own default limit for .npy headers


def _npy_header(f, path, name):
    """(shape, fortran, dtype, header_bytes) of an .npy stream, reading only its header."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        read = fmt.read_array_header_1_0
    elif version == (2, 0):
        read = fmt.read_array_header_2_0
    else:
        read = getattr(fmt, "_read_array_header", None)
        if read is None:  # pragma: no cover - numpy without format 3 support
            raise ValueError(f"{path}: array {name!r} uses .npy format {version}")
        shape, fortran, dtype = read(f, version, max_header_size=_MAX_NPY_HEADER)
        return shape, fortran, dtype, f.tell()
    try:
        shape, fortran, dtype = read(f, max_header_size=_MAX_NPY_HEADER)
    except TypeError:  # pragma: no cover - numpy < 1.24 has no max_header_size
        shape, fortran, dtype = read(f)
    return shape, fortran, dtype, f.tell()


def _spec(v):
    """(shape or None, dtype or None) from an expected-entry description."""
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return tuple(v.shape), np.dtype(v.dtype)
    shape, dtype = v
    return (None if shape is None else tuple(int(d) for d in shape),
            None if dtype is None else np.dtype(dtype))


def load(path, expected=None, *, allow_extra=False, max_bytes=None):
    """Read an addercore ``.npz`` checkpoint → ``(arrays: dict[str, np.ndarray], metadata: dict)``.

    Nothing is inflated or allocated before the whole file has been checked from its zip
    directory and the ``.npy`` headers: every entry must be a stored or deflated (not
    encrypted) ``.npy`` array of a plain dtype whose header's shape x itemsize equals the
    directory's uncompressed size, and the arrays together must fit ``max_bytes`` (default
    :func:`default_max_bytes`: 16x the file size + 64 MiB).

    expected : optional mapping ``name -> array`` (anything with ``.shape``/``.dtype``, e.g. a
        model's ``state_dict()``) or ``name -> (shape, dtype)`` (either may be ``None`` for
        "any"). Each named array present in the file must have exactly that shape and dtype;
        names not in ``expected`` (besides the metadata) are refused unless ``allow_extra``.
        Names of ``expected`` missing from the file are not an error here (the caller's
        ``load_state_dict`` reports them).

    Raises ``FileNotFoundError`` if absent and ``ValueError`` naming the file (and the array)
    if it is truncated, corrupt, oversized, not an addercore checkpoint, or does not match
    ``expected``.
    """
    path = os.fspath(path)
    specs = None if expected is None else {str(k): _spec(v) for k, v in expected.items()}
    try:
        size = os.stat(path).st_size
        budget = _Budget(path, default_max_bytes(size) if max_bytes is None else max_bytes)
        arrays = {}
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            plan = []
            for info in zf.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if name is None:
                    raise ValueError(f"{path}: entry {info.filename!r} is not a .npy array")
                if any(n == name for n, _ in plan):
                    raise ValueError(f"{path}: array {name!r} appears twice")
                if specs is not None and name != METADATA_KEY and name not in specs \
                        and not allow_extra:
                    raise ValueError(f"{path}: unexpected array {name!r} (not part of the "
                                     "expected model/state)")
                what = f"array {name!r}"
                _zip_entry(zf, info.filename, path, budget, what=what)
                with zf.open(info) as f:
                    shape, _fortran, dtype, head = _npy_header(f, path, name)
                if dtype.hasobject:
                    raise ValueError(f"{path}: {what} has object dtype (pickled data is refused)")
                if dtype.fields is not None or dtype.subdtype is not None:
                    raise ValueError(f"{path}: {what} has a structured dtype {dtype}")
                nbytes = math.prod(shape) * dtype.itemsize
                if head + nbytes != info.file_size:
                    raise ValueError(
                        f"{path}: {what} declares shape {shape} {dtype} = {nbytes} bytes but its "
                        f"record holds {info.file_size - head} (truncated or corrupt)")
                if specs is not None and name in specs:
                    want_shape, want_dtype = specs[name]
                    if (want_shape is not None and tuple(shape) != want_shape) or \
                            (want_dtype is not None and dtype != want_dtype):
                        raise ValueError(
                            f"{path}: {what} has shape {tuple(shape)} {dtype}, the model expects "
                            f"{want_shape if want_shape is not None else '(any shape)'} "
                            f"{want_dtype if want_dtype is not None else '(any dtype)'}")
                budget.charge(nbytes, what)
                plan.append((name, info))
            for name, info in plan:  # every size is known and within the limit: read
                with zf.open(info) as f:
                    try:
                        arrays[name] = np.lib.format.read_array(
                            f, allow_pickle=False, max_header_size=_MAX_NPY_HEADER)
                    except TypeError:  # pragma: no cover - numpy < 1.24
                        arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # zipfile/zlib errors, bad headers, method 99, encrypted entries...
        raise _named(path, e, "checkpoint") from e
    if METADATA_KEY not in arrays:
        raise ValueError(f"{path}: not an addercore checkpoint (no {METADATA_KEY!r} entry)")
    meta = arrays.pop(METADATA_KEY)
    try:
        if meta.dtype.kind != "U" or meta.shape != ():
            raise ValueError(f"metadata is {meta.dtype} {meta.shape}, expected a JSON string")
        metadata = json.loads(str(meta[()]))
    except (ValueError, TypeError, IndexError, RecursionError) as e:
        raise ValueError(f"{path}: corrupt metadata ({type(e).__name__}: {e})") from e
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: corrupt metadata (holds {type(metadata).__name__}, expected an object)")
    return arrays, metadata


# --------------------------------------------------------------------------------------------
# Export to PyTorch's zip format (no PyTorch needed)
# --------------------------------------------------------------------------------------------

_TORCH_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage", np.dtype(np.complex64): "ComplexFloatStorage",
    np.dtype(np.complex128): "ComplexDoubleStorage",
}


class _PickleWriter:
    """Just the protocol-2 opcodes a state dict needs, written by hand.

    torch.save writes its pickle with the standard pickler, naming torch's globals; without
    torch those globals cannot be imported, so the opcodes are emitted directly (the same bytes
    the pickler would write, minus memoisation).
    """

    def __init__(self):
        self.out = bytearray(pickle.PROTO + b"\x02")

    def glob(self, module, name):
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")

    def text(self, s):
        b = s.encode("utf-8")
        self.out += pickle.BINUNICODE + struct.pack("<I", len(b)) + b

    def int(self, v):
        v = int(v)
        if 0 <= v < 256:
            self.out += pickle.BININT1 + struct.pack("<B", v)
        elif 0 <= v < 65536:
            self.out += pickle.BININT2 + struct.pack("<H", v)
        elif -(1 << 31) <= v < (1 << 31):
            self.out += pickle.BININT + struct.pack("<i", v)
        else:
            b = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.out += pickle.LONG1 + struct.pack("<B", len(b)) + b

    def int_tuple(self, values):
        values = tuple(values)
        if not values:
            self.out += pickle.EMPTY_TUPLE
            return
        self.out += pickle.MARK
        for v in values:
            self.int(v)
        self.out += pickle.TUPLE

    def empty_ordered_dict(self):
        self.glob("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE


def _torch_state_pickle(names, arrays):
    """data.pkl of ``torch.save(OrderedDict(name -> tensor))``; storage keys "0", "1", ..."""
    w = _PickleWriter()
    w.empty_ordered_dict()
    if names:
        w.out += pickle.MARK
        for i, (name, a) in enumerate(zip(names, arrays)):
            w.text(name)
            w.glob("torch._utils", "_rebuild_tensor_v2")
            w.out += pickle.MARK
            # persistent id ('storage', torch.<T>Storage, key, location, numel)
            w.out += pickle.MARK
            w.text("storage")
            w.glob("torch", _TORCH_STORAGE_NAMES[a.dtype])
            w.text(str(i))
            w.text("cpu")
            w.int(a.size)
            w.out += pickle.TUPLE + pickle.BINPERSID
            w.int(0)                                   # storage offset
            w.int_tuple(a.shape)                       # size
            w.int_tuple(_c_strides(a.shape))           # stride (elements), C order
            w.out += pickle.NEWFALSE                   # requires_grad
            w.empty_ordered_dict()                     # backward_hooks
            w.out += pickle.TUPLE + pickle.REDUCE
        w.out += pickle.SETITEMS
    w.out += pickle.STOP
    return bytes(w.out)


def _c_strides(shape):
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(strides))


def save_torch_checkpoint(path, state_dict, *, overwrite=False):
    """Write ``state_dict`` (``name -> array``) in PyTorch's zip checkpoint format, without torch.

    The file is what ``torch.save(OrderedDict(...), path)`` writes for CPU tensors: a zip
    (stored, data records aligned to 64 bytes) holding ``archive/data.pkl`` (protocol-2
    pickle naming only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
    ``torch.<T>Storage``), ``archive/byteorder`` (``little``), ``archive/data/<i>`` (each
    tensor's little-endian bytes) and ``archive/version`` (``3``). It loads with
    ``torch.load(path, weights_only=True)`` and with :func:`load_torch_checkpoint`; key order
    is kept. Supported dtypes: float16/32/64, int8/16/32/64, uint8, bool, complex64/128
    (arrays are written C-contiguous, little-endian).

    Written atomically (:func:`atomic_open`). An existing ``path`` is refused
    (``FileExistsError``) unless ``overwrite=True``. ``TypeError`` for non-str keys or
    unsupported dtypes.
    """
    path = os.fspath(path)
    if not isinstance(state_dict, dict):
        raise TypeError(f"save_torch_checkpoint: state_dict must be a dict str -> array, got "
                        f"{type(state_dict).__name__}")
    names, arrays = [], []
    for k, v in state_dict.items():
        if not isinstance(k, str):
            raise TypeError(f"save_torch_checkpoint: keys must be str, got {k!r}")
        a = np.asarray(v)
        native = a.dtype.newbyteorder("=") if a.dtype.byteorder not in ("=", "|") else a.dtype
        if native not in _TORCH_STORAGE_NAMES:
            raise TypeError(f"save_torch_checkpoint: {k!r} has dtype {a.dtype}; supported: "
                            + ", ".join(sorted(str(d) for d in _TORCH_STORAGE_NAMES)))
        a = np.array(a, dtype=native.newbyteorder("<"), order="C")  # 0-d stays 0-d
        names.append(k)
        arrays.append(a)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(errno.EEXIST, f"{path!r} exists; pass overwrite=True to replace it", path)
    pkl = _torch_state_pickle(names, [a.view(a.dtype.newbyteorder("=")) for a in arrays])
    records = [("archive/data.pkl", pkl), ("archive/byteorder", b"little")]
    records += [(f"archive/data/{i}", a.tobytes()) for i, a in enumerate(arrays)]
    records += [("archive/version", b"3\n")]
    with atomic_open(path, "wb") as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, data in records:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                # torch aligns each record's data to 64 bytes with a padding extra field
                # ("FB" + length + "Z"s); the 30-byte local header and the name come first.
                start = f.tell() + 30 + len(name.encode("utf-8")) + 4
                pad = (-start) % 64
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
                zf.writestr(info, data)
