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
import json
import os
import pickle
import secrets
import struct
import zipfile

import numpy as np

from .safe_pickle import RefusedGlobalError, RestrictedUnpickler

__all__ = [
    "load_torch_checkpoint",
    "load_torch_object",
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


class _LazyTensor:
    """Result of ``_rebuild_tensor_v2`` before storage bytes are available."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(
                f"tensor rebuilt from {type(storage).__name__}, expected a storage")
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        if len(self.size) != len(self.stride):
            raise pickle.UnpicklingError(f"tensor size {self.size} and stride {self.stride} differ in rank")

    def materialize(self):
        st = self.storage
        flat = st.data
        n = int(np.prod(self.size, dtype=np.int64))
        if n == 0:
            arr = np.zeros(self.size, dtype=flat.dtype)
        else:
            # Bounds check before as_strided: a corrupt file must not read outside the storage.
            if any(s < 0 for s in self.stride) or self.offset < 0:
                raise ValueError(f"tensor with negative stride/offset {self.stride}/{self.offset}")
            last = self.offset + sum((d - 1) * s for d, s in zip(self.size, self.stride))
            if last >= flat.shape[0]:
                raise ValueError(
                    f"tensor of size {self.size}, stride {self.stride}, offset {self.offset} "
                    f"reaches element {last} of a storage with {flat.shape[0]} elements")
            item = flat.itemsize
            view = np.lib.stride_tricks.as_strided(
                flat[self.offset:], shape=self.size,
                strides=tuple(s * item for s in self.stride), writeable=False)
            arr = np.array(view, order="C")  # copy: contiguous, owns its memory
        if st.stype.bfloat16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        if arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr


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


def _resolve(obj):
    """Replace every _LazyTensor in a nested structure by its numpy array."""
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    if isinstance(obj, (_Storage, _StorageType)):
        raise ValueError("bare storages are not supported outside tensors")
    return obj


def _load_legacy(f, path):
    allowed = _torch_globals()
    plain = {}  # the three header pickles only hold ints/dicts

    def header(what):
        return RestrictedUnpickler(f, plain, what=f"{path} ({what})").load()

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
        if key not in storages:
            storages[key] = _Storage(stype, key, numel)
        root = storages[key]
        if view is None:
            return root
        view_key, offset, view_size = view
        if view_key not in storages:
            storages[view_key] = _Storage(stype, view_key, view_size, base=root, offset=offset)
        return storages[view_key]

    obj = RestrictedUnpickler(f, allowed, persistent_load=persistent_load, encoding="utf-8",
                              what=f"{path}").load()
    keys = RestrictedUnpickler(f, plain, what=f"{path} (storage keys)").load()
    if not isinstance(keys, list):
        raise ValueError(f"{path}: storage key list is {type(keys).__name__}, expected list")
    for key in keys:
        st = storages.get(key)
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
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"{path}: truncated in the data of storage {key!r} "
                             f"({len(raw)} of {nbytes} bytes)")
        st._data = np.frombuffer(raw, dtype=dt)
    return obj


def _load_zip(path):
    allowed = _torch_globals()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkls:
            raise ValueError(f"{path}: zip file without data.pkl, not a PyTorch checkpoint")
        pkl = min(pkls, key=len)
        prefix = pkl[: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            little = zf.read(prefix + "byteorder").strip() != b"big"
        storages = {}

        def persistent_load(pid):
            data = _pid_tuple(pid)
            if len(data) != 4:
                raise pickle.UnpicklingError(f"zip storage id has {len(data)} fields, expected 4")
            stype, key, _location, numel = data
            stype = _check_stype(stype)
            if key not in storages:
                name = f"{prefix}data/{key}"
                try:
                    raw = zf.read(name)
                except KeyError:
                    raise ValueError(f"{path}: missing storage record {name!r}") from None
                dt = stype.dtype.newbyteorder("<" if little else ">")
                if stype.name == "UntypedStorage":
                    numel = len(raw)
                if len(raw) != int(numel) * dt.itemsize:
                    raise ValueError(f"{path}: storage {name!r} has {len(raw)} bytes, "
                                     f"expected {int(numel) * dt.itemsize}")
                st = _Storage(stype, key, numel)
                st._data = np.frombuffer(raw, dtype=dt)
                storages[key] = st
            return storages[key]

        with zf.open(pkl) as f:
            return RestrictedUnpickler(f, allowed, persistent_load=persistent_load,
                                       encoding="utf-8", what=f"{path}:{pkl}").load()


def load_torch_object(path):
    """Load any object saved with ``torch.save`` (restricted), tensors as numpy arrays.

    Returns the unpickled structure (dicts, lists, numbers, strings) with every tensor replaced
    by a C-contiguous numpy array of its dtype. Raises ``ValueError`` for truncated/corrupt
    files and :class:`~addercore.safe_pickle.RefusedGlobalError` for disallowed globals.
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            obj = _load_zip(path)
        else:
            with open(path, "rb") as f:
                obj = _load_legacy(f, path)
        return _resolve(obj)
    except RefusedGlobalError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
            UnicodeDecodeError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise ValueError(f"{path}: truncated or corrupt PyTorch checkpoint "
                         f"({type(e).__name__}: {e})") from e


def load_torch_checkpoint(path):
    """Read a PyTorch state dict file without PyTorch.

    Returns ``dict[str, np.ndarray]`` (insertion order of the file). A top-level dict holding
    ``state_dict`` (or ``model_state_dict``) is unwrapped. Supports the legacy and zip formats;
    float16/32/64, bfloat16 (widened to float32), int8/16/32/64, uint8 and bool tensors with any
    storage offset and stride. Keys are returned as saved (see :func:`strip_prefix`).
    """
    obj = load_torch_object(path)
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
    return out


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


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Context manager yielding a file that replaces ``path`` atomically on success.

    Writes go to a temporary file in the same directory; on normal exit it is flushed,
    fsync'ed, renamed over ``path`` (``os.replace``) and the directory is fsync'ed. On an
    exception the temporary file is removed and ``path`` is untouched. A process killed
    mid-way leaves ``path`` intact (plus at most a stale ``.<name>.<random>.tmp``).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(dirname, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, like a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    f = os.fdopen(fd, mode)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(dirname)


def atomic_write_bytes(path, data):
    """Atomically replace ``path`` with ``data`` (bytes); see :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        f.write(data)


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


def load(path):
    """Read an addercore ``.npz`` checkpoint → ``(arrays: dict[str, np.ndarray], metadata: dict)``.

    Raises ``FileNotFoundError`` if absent and ``ValueError`` naming the file if it is
    truncated, corrupt or not an addercore checkpoint.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from e
    if METADATA_KEY not in arrays:
        raise ValueError(f"{path}: not an addercore checkpoint (no {METADATA_KEY!r} entry)")
    meta = arrays.pop(METADATA_KEY)
    try:
        metadata = json.loads(str(meta[()]))
    except (ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: corrupt metadata ({e})") from e
    return arrays, metadata
