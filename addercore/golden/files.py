"""Golden files on disk: deterministic ``.npz`` writing, confined and bounded reading, the
manifest and its digest.

Writing: ``.npz`` files with sorted entries, no compression and fixed zip metadata, so equal
arrays give equal bytes; every file (and the manifest) goes through
:func:`addercore.io.atomic_write_bytes` (temporary file, fsync, rename, fsync of the folder).

Reading treats a golden set and a candidate folder as untrusted input (docs/robustness.md):

- every path named by a manifest is **confined** to its folder: relative, no ``..``, no
  absolute path, and after resolving symbolic links still inside the folder;
- only **regular files** are opened (a device such as ``/dev/zero`` or a FIFO is refused
  before a byte is read), opened non-blocking;
- sizes are **bounded before reading** (:data:`MAX_FILE_BYTES`, :data:`MAX_MANIFEST_BYTES`), and
  the bytes actually read are bounded too (a file growing while read is refused);
- the ``sha256`` is computed **while streaming** the file and checked before it is parsed;
- a candidate ``.npz`` may be compressed: its declared uncompressed sizes are checked against
  the same bound before anything is inflated;
- a damaged manifest (missing keys, wrong types, bad JSON) raises :class:`ValueError` naming
  the file, the case and the problem.
"""
import hashlib
import io
import json
import math
import os
import stat
import zipfile

import numpy as np

from ..io import atomic_write_bytes
from .cases import FORMAT_NAME, FORMAT_VERSION

__all__ = ["write_npz", "read_npz", "read_npz_bytes", "confined_path", "read_confined",
           "load_manifest", "read_manifest", "manifest_digest", "write_manifest",
           "MAX_FILE_BYTES", "MAX_MANIFEST_BYTES", "COMMITTED_SMALL_SET_DIGEST"]

#: Largest golden or candidate ``.npz`` read (bytes on disk, and bytes after inflating).
#: The full set's largest file is 8.5 MB.
MAX_FILE_BYTES = 256 * 2**20
#: Largest ``manifest.json`` read (the full set's is about 0.2 MB).
MAX_MANIFEST_BYTES = 16 * 2**20

#: sha256 of the committed small set's ``tests/golden/manifest.json``: ``verify
#: --expect-digest committed`` checks a set against it (the manifest holds every case's
#: tolerances and every file's sha256, so this one digest pins the whole set). Regenerating
#: the committed set means updating this value (a test compares the two).
COMMITTED_SMALL_SET_DIGEST = "e2d6a82d4c729d331daec9b680efcebc47633513f1526dfa2a48875a03e859ad"

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def npz_bytes(arrays):
    """The bytes of a deterministic, uncompressed ``.npz`` of ``arrays`` (name -> ndarray)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            if a.dtype.kind not in "fiub":
                raise TypeError(f"array {name!r}: unsupported dtype {a.dtype}")
            a = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
            data = io.BytesIO()
            np.lib.format.write_array(data, a, version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue())
    return buf.getvalue()


def write_npz(path, arrays):
    """Write ``arrays`` (name -> ndarray) as an uncompressed ``.npz`` that ``numpy.load`` reads,
    byte-identical for identical arrays: sorted names, fixed timestamps and attributes.
    Atomic (:func:`addercore.io.atomic_write_bytes`); returns the bytes written."""
    data = npz_bytes(arrays)
    atomic_write_bytes(path, data)
    return data


def write_manifest(out_dir, manifest):
    """Write ``manifest.json`` (sorted keys, one-space indent, ``\\n`` line ends) atomically;
    returns its bytes."""
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    atomic_write_bytes(os.path.join(out_dir, "manifest.json"), data)
    return data


# --------------------------------------------------------------------------------------------
# Confined, bounded reading
# --------------------------------------------------------------------------------------------
def _lexical_check(rel, what):
    """Why ``rel`` is not a plain relative path inside its folder, or None."""
    if not isinstance(rel, str) or not rel:
        return f"{what} must be a non-empty string, got {rel!r}"
    if "\0" in rel:
        return f"{what} {rel!r} contains a NUL character"
    norm = rel.replace("\\", "/")
    if norm.startswith("/") or os.path.isabs(rel) or os.path.splitdrive(rel)[0]:
        return f"{what} {rel!r} is an absolute path (must be relative to its folder)"
    if ".." in norm.split("/"):
        return f"{what} {rel!r} contains '..' (must stay inside its folder)"
    return None


def confined_path(root, rel, what="file"):
    """``root/rel`` if ``rel`` is relative, free of ``..`` and, once symbolic links are
    resolved, still inside ``root``; else ValueError naming ``what``."""
    problem = _lexical_check(rel, what)
    if problem:
        raise ValueError(problem)
    root_real = os.path.realpath(root)
    full = os.path.join(root_real, rel)
    real = os.path.realpath(full)
    if os.path.commonpath([root_real, real]) != root_real:
        raise ValueError(f"{what} {rel!r} resolves to {real}, outside {root_real} "
                         f"(a symbolic link leaving the folder)")
    return real


def read_confined(root, rel, max_bytes, what="file", sha256=None):
    """Bytes of the regular file ``root/rel`` (see :func:`confined_path`), at most
    ``max_bytes``, hashed while read; ``sha256`` (hex), when given, must match.

    ValueError for a path leaving ``root``, a non-regular file, a file larger than the
    bound or a hash mismatch; OSError (FileNotFoundError, ...) when it cannot be opened."""
    # O_NOFOLLOW: the path is resolved already; a link swapped in since is refused.
    return _read_regular(confined_path(root, rel, what), max_bytes, f"{what} {rel!r}",
                         sha256, nofollow=True)


def _read_regular(path, max_bytes, label, sha256=None, nofollow=False):
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_BINARY", 0) | (getattr(os, "O_NOFOLLOW", 0) if nofollow else 0)
    fd = os.open(path, flags)  # non-blocking: opening a FIFO never waits for a writer
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{label} ({path}) is not a regular file")
        if st.st_size > max_bytes:
            raise ValueError(f"{label} is {st.st_size} bytes, more than the {max_bytes}-byte "
                             f"limit")
        digest = hashlib.sha256()
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise ValueError(f"{label} grew past the {max_bytes}-byte limit while being "
                                 f"read")
            digest.update(chunk)
            chunks.append(chunk)
    finally:
        os.close(fd)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise ValueError(f"{label} is corrupt (sha256 mismatch: {digest.hexdigest()} != "
                         f"{sha256})")
    return b"".join(chunks)


def read_npz_bytes(data, max_bytes=MAX_FILE_BYTES, what="file"):
    """dict name -> ndarray of ``.npz`` bytes (no pickles); the declared uncompressed size of
    every entry is checked against ``max_bytes`` (in total) before anything is inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{what} is not a valid .npz (zip) file: {exc}") from None
    if declared > max_bytes:
        raise ValueError(f"{what} declares {declared} uncompressed bytes, more than the "
                         f"{max_bytes}-byte limit")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError,
            RuntimeError, KeyError) as exc:
        raise ValueError(f"{what} is not a readable .npz: {type(exc).__name__}: {exc}") \
            from None


def read_npz(path):
    """dict name -> ndarray of the ``.npz`` at ``path`` (no pickles; regular files only,
    at most :data:`MAX_FILE_BYTES`)."""
    path = os.fspath(path)
    return read_npz_bytes(_read_regular(path, MAX_FILE_BYTES, path), what=path)


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------
def manifest_digest(golden_dir):
    """sha256 (hex) of ``golden_dir/manifest.json``, as :func:`read_manifest` computes it."""
    return read_manifest(golden_dir)[1]


def _check_entry(index, entry, where):
    """ValueError naming the case and the problem, for a manifest entry of the wrong shape."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: cases[{index}] must be an object, got "
                         f"{type(entry).__name__}")
    name = entry.get("name")
    label = f"{where}: cases[{index}]" + (f" ({name!r})" if isinstance(name, str) else "")

    def need(key, types, type_name):
        if key not in entry:
            raise ValueError(f"{label}: key {key!r} is missing")
        value = entry[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise ValueError(f"{label}: {key!r} must be {type_name}, got "
                             f"{type(value).__name__} {value!r:.60}")
        return value

    need("name", (str,), "a string")
    need("op", (str,), "a string")
    problem = _lexical_check(need("file", (str,), "a string"), "'file'")
    if problem:
        raise ValueError(f"{label}: {problem}")
    integer_kind = entry["op"] in ("adder2d_int", "resnet_int")  # code dtypes (quant)
    allowed = ("float32", "float64") + (("uint8", "uint16", "int8", "int16", "float32")
                                        if integer_kind else ())
    if need("dtype", (str,), "a string") not in allowed:
        raise ValueError(f"{label}: 'dtype' must be 'float32' or 'float64'"
                         f"{' (or an integer code dtype)' if integer_kind else ''}, got "
                         f"{entry['dtype']!r}")
    need("params", (dict,), "an object")
    for key in ("inputs", "outputs"):
        names = need(key, (list,), "a list of array names")
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"{label}: {key!r} must be a list of strings")
    sha = need("sha256", (str,), "a hex string")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"{label}: 'sha256' must be 64 lowercase hex digits, got {sha!r:.80}")
    tol = need("tolerance", (dict,), "an object")
    for key in ("rtol", "atol"):
        v = tol.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            raise ValueError(f"{label}: tolerance[{key!r}] must be a finite number >= 0, "
                             f"got {v!r}")
    exact = tol.get("exact", [])
    if not isinstance(exact, list) or not all(isinstance(n, str) for n in exact):
        raise ValueError(f"{label}: tolerance['exact'] must be a list of array names")


def read_manifest(golden_dir):
    """(manifest dict, sha256 hex of its bytes) of ``golden_dir/manifest.json``, checked: the
    format and version, and every case's keys and types (ValueError naming the problem)."""
    golden_dir = os.fspath(golden_dir)
    path = os.path.join(golden_dir, "manifest.json")
    if not os.path.isdir(golden_dir) or not os.path.lexists(path):
        raise FileNotFoundError(f"{path} not found: is {golden_dir!r} a golden set?")
    data = read_confined(golden_dir, "manifest.json", MAX_MANIFEST_BYTES, what=path)
    digest = hashlib.sha256(data).hexdigest()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})"[:300]) \
            from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: format is {manifest.get('format')!r:.80}, expected "
                         f"{FORMAT_NAME!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {manifest.get('format_version')!r:.80} is "
                         f"not supported (this addercore reads {FORMAT_VERSION})")
    entries = manifest.get("cases")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'cases' must be a list, got {type(entries).__name__}")
    seen = set()
    for index, entry in enumerate(entries):
        _check_entry(index, entry, path)
        if entry["name"] in seen:
            raise ValueError(f"{path}: case name {entry['name']!r} appears twice")
        seen.add(entry["name"])
    return manifest, digest


def load_manifest(golden_dir):
    """Read and check ``golden_dir/manifest.json`` (see :func:`read_manifest`)."""
    return read_manifest(golden_dir)[0]
