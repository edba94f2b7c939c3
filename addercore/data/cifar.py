"""CIFAR-10 / CIFAR-100 from the standard "python version" batch files, without any framework.

Accepted locations (``root``): the extracted folder itself (``cifar-10-batches-py/``), a
directory containing it, the ``.tar.gz`` archive, or a directory containing the archive. The
archive is read member by member in memory (nothing is extracted to disk). Batches are pickles;
they are read with addercore's restricted unpickler (numpy arrays only, no code execution).
"""
import difflib
import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..safe_pickle import BoundedReader, RefusedGlobalError, cifar_globals, plain_array, restricted_load
from .download import DataNotFoundError, default_cache_dir, download_url, search_dirs

__all__ = ["load_cifar10", "load_cifar100", "CIFAR10_CLASSES", "CIFAR_SPECS"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

CIFAR_SPECS = {
    "cifar10": dict(
        title="CIFAR-10", folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
        labels={"fine": ("labels", 10)}),
    "cifar100": dict(
        title="CIFAR-100", folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=["train"], test=["test"],
        labels={"fine": ("fine_labels", 100), "coarse": ("coarse_labels", 20)}),
}


def _stream_size(fileobj):
    """Bytes left in ``fileobj`` (a tar member or a regular file), or None if unknown."""
    raw = getattr(fileobj, "raw", None)
    if isinstance(getattr(raw, "size", None), int) and not isinstance(raw, io.FileIO):
        return raw.size - fileobj.tell()  # tarfile's member stream (its fileno is the archive's)
    try:
        return os.fstat(fileobj.fileno()).st_size - fileobj.tell()
    except (OSError, AttributeError, ValueError):
        return None


def _labels_array(labels, n, name, label_key):
    """The label list/array as int64 (n,), checked before numpy converts anything.

    A list must hold exactly ``n`` Python ints: converting an arbitrary pickled object could
    build a huge array (lists of shared lists) or an object array.
    """
    if isinstance(labels, list):
        if len(labels) != n or not all(type(v) is int for v in labels):
            kinds = sorted({type(v).__name__ for v in labels[:1000]})
            raise ValueError(f"{name}: {label_key!r} must be {n} integers, got a list of "
                             f"{len(labels)} ({', '.join(kinds) or 'empty'})")
        try:
            return np.array(labels, dtype=np.int64).reshape(n)
        except OverflowError:
            raise ValueError(f"{name}: {label_key!r} holds integers beyond int64") from None
    if isinstance(labels, np.ndarray):
        labels = plain_array(labels)
        if labels.ndim == 1 and labels.shape[0] == n and labels.dtype.kind in "iu":
            return labels.astype(np.int64)
        desc = f"{labels.dtype} {labels.shape}"
    else:
        desc = type(labels).__name__
    raise ValueError(f"{name}: {label_key!r} must be {n} integers, got {desc}")


def _parse_batch(fileobj, name, label_key, num_classes):
    """Unpickle one batch → (images uint8 (n,3,32,32), labels int64 (n,)); ValueError naming ``name``.

    Only what numpy's pickling of the real batches produces is admitted (see
    :func:`addercore.safe_pickle.cifar_globals`): every array's buffer length is checked
    against its shape before it exists, reads never go past the file's real size, and any
    failure of the pickle machine (MemoryError, RecursionError, ...) becomes a ValueError.
    """
    try:
        size = _stream_size(fileobj)
        # One pickle per file, so a read-ahead buffer over the bounded stream is safe (and
        # keeps the C unpickler's speed: ~0.25 s per 30 MB batch).
        stream = io.BufferedReader(BoundedReader(fileobj, size)) if size is not None else fileobj
        d = restricted_load(stream, cifar_globals(), encoding="bytes", what=f"CIFAR batch {name}")
    except RefusedGlobalError:
        raise
    except Exception as e:  # pickle errors on corrupt bytes are of many types
        detail = ("it declares a size larger than memory" if isinstance(e, MemoryError)
                  else str(e) or "no detail")
        raise ValueError(f"{name}: truncated or corrupt CIFAR batch ({type(e).__name__}: {detail})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{name}: not a CIFAR batch (holds {type(d).__name__}, expected dict)")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or label_key not in d:
        raise ValueError(f"{name}: not a CIFAR batch of this data set (keys "
                         f"{sorted(map(str, d))[:20]}; expected 'data' and {label_key!r})")
    data = plain_array(d["data"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{name}: 'data' must be uint8 (n, 3072), got {desc}")
    labels = _labels_array(d[label_key], data.shape[0], name, label_key)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name}: labels outside [0, {num_classes}): min {labels.min()}, max {labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _find(spec, names, root):
    """Return ('dir', folder) / ('tar', archive) for the first location holding ``names``."""
    tried = []
    for d in search_dirs(root):
        tried.append(d)
        if d.is_file():
            return ("tar", d), tried
        for cand in (d, d / spec["folder"]):
            if all((cand / n).is_file() for n in names):
                return ("dir", cand), tried
        if (d / spec["archive"]).is_file():
            return ("tar", d / spec["archive"]), tried
    return None, tried


def _read_dir(folder, names, label_key, num_classes):
    parts = []
    for n in names:
        with open(folder / n, "rb") as f:
            parts.append(_parse_batch(f, str(folder / n), label_key, num_classes))
    return parts


def _read_tar(archive, spec, names, label_key, num_classes):
    found = {}
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:  # one sequential pass: gzip has no random access
                parts = m.name.replace("\\", "/").strip("/").split("/")
                if not m.isfile() or parts[-1] not in names or parts[-1] in found:
                    continue
                if len(parts) > 1 and parts[-2] != spec["folder"]:
                    continue
                f = tf.extractfile(m)
                found[parts[-1]] = _parse_batch(f, f"{archive}:{m.name}", label_key, num_classes)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ValueError(f"{archive}: not a readable {spec['title']} archive "
                         f"({type(e).__name__}: {e})") from e
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{archive}: wrong archive, missing {spec['folder']}/{', '.join(missing)} "
                         f"(expected the official {spec['archive']})")
    return [found[n] for n in names]


def _not_found(spec, tried, root, reason):
    where = "\n".join(f"  {p}" for p in tried)
    return DataNotFoundError(
        f"{spec['title']} data not found. Looked for '{spec['folder']}/' or '{spec['archive']}' in:\n"
        f"{where}\n{reason}\n"
        f"To provide it: download {spec['url']} (md5 {spec['md5']}) and put the archive (or its "
        f"extracted '{spec['folder']}' folder) in one of these directories, or point to it with "
        f"root=/--data-dir or the ADDERCORE_DATA environment variable."
    )


# ------------------------------------------------------------------------------------------
# An explicit root that does not hold the data: say what is wrong, never write into it
# ------------------------------------------------------------------------------------------

def _other(key):
    return "cifar100" if key == "cifar10" else "cifar10"


def _all_names(spec):
    return spec["train"] + spec["test"]


def _batches_in(folder, spec, need_marker):
    """The data set's batch files directly in ``folder``. CIFAR-100's are called "train" and
    "test", so outside its own folder they count only next to its "meta" file."""
    if need_marker and spec["folder"] == CIFAR_SPECS["cifar100"]["folder"] \
            and not (folder / "meta").is_file():
        return []
    return [n for n in _all_names(spec) if (folder / n).is_file()]


def _holds(folder, spec):
    """The path through which ``folder`` holds the complete data set ``spec``, else None."""
    if (folder / spec["archive"]).is_file():
        return folder / spec["archive"]
    for cand in (folder, folder / spec["folder"]):
        if all((cand / n).is_file() for n in _all_names(spec)):
            return cand
    return None


def _below(spec, root, depth=2, fanout=200):
    """The complete data set up to ``depth`` directory levels below ``root`` (first 3 hits)."""
    found, level = [], [root]
    for _ in range(depth):
        deeper = []
        for d in level:
            try:  # a hint only: bounded, and unreadable directories are skipped
                subdirs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for sub in subdirs[:fanout]:
                hit = _holds(sub, spec)
                if hit is not None and hit not in found and hit.parent not in found:
                    found.append(hit)
            deeper.extend(subdirs[:fanout])
        level = deeper
    return found[:3]


def _diagnose(key, root):
    """Why the explicit ``root`` does not hold data set ``key``: ``(reason, cifar_like)``.

    ``cifar_like`` is true when ``root`` holds something CIFAR-shaped (an incomplete batches
    folder, the other CIFAR data set, the data further down): a download into such a
    directory would hide the mistake, so it is refused even when asked for."""
    spec, other = CIFAR_SPECS[key], CIFAR_SPECS[_other(key)]
    title, use_other = spec["title"], f"--dataset {_other(key)}"
    if not root.exists():
        reason, hints = f"{root} does not exist.", []
        parent = root.parent
        if parent.is_dir():
            hints = [str(c) for c in (parent / spec["folder"], parent / spec["archive"]) if c.exists()]
            if not hints:
                try:
                    names = [p.name for p in parent.iterdir()]
                except OSError:
                    names = []
                hints = [str(parent / n) for n in difflib.get_close_matches(root.name, names, n=2)]
        if hints:
            reason += f" Did you mean {' or '.join(hints)}?"
        return reason, False
    if root.is_file():
        if root.name == other["archive"]:
            return f"{root} is the {other['title']} archive: for {other['title']} use {use_other}.", True
        if root.name in _all_names(spec) or root.name == "batches.meta":
            return (f"{root} is one batch file: use --data-dir {root.parent} (its folder).", True)
        return None, True  # any other file is read as an archive and reported by the reader
    for folder, need_marker in ((root, True), (root / spec["folder"], False)):
        have = _batches_in(folder, spec, need_marker)
        missing = [n for n in _all_names(spec) if n not in have]
        if have and missing:
            return (f"{folder} holds an incomplete {title}: missing {', '.join(missing)} (has "
                    f"{', '.join(have)}). Restore the missing files or point --data-dir to a "
                    f"complete copy or to the official {spec['archive']}."), True
    hit = _holds(root, other)
    if hit is not None:
        return (f"{root} holds {other['title']} ({hit}), not {title}: for {other['title']} use "
                f"{use_other}."), True
    below = _below(spec, root)
    if below:
        return (f"{root} does not hold {title} itself, but {' and '.join(map(str, below))} "
                f"does: use --data-dir {below[0]}."), True
    below = _below(other, root)
    if below:
        return (f"{root} holds no {title}, but {below[0]} is {other['title']}: for "
                f"{other['title']} use {use_other} --data-dir {below[0]}."), True
    return (f"{root} holds no {title}: expected the '{spec['folder']}' folder "
            f"({', '.join(_all_names(spec))}) or '{spec['archive']}' in it, or to be that "
            f"folder."), False


def _fetch(spec, dest_dir, tried, root, progress):
    try:
        return download_url(spec["url"], dest_dir / spec["archive"], md5=spec["md5"],
                            progress=progress)
    except Exception as e:  # URLError, DownloadError (md5), HTTP/protocol errors, disk errors
        raise _not_found(spec, tried, root, f"Download from {spec['url']} failed: {e}") from None


def _locate(key, names, root, download, progress):
    """Where to read ``names`` of data set ``key`` from: ``('dir' | 'tar', path)``.

    The download decision: with ``root=None``, into the cache directory when ``download`` is
    true; with an explicit ``root``, only when ``download == "root"`` and the root is absent or
    holds nothing CIFAR-like. An explicit root that exists but holds the wrong thing is
    reported (:class:`DataNotFoundError`) and never written into."""
    spec = CIFAR_SPECS[key]
    if download not in (True, False, "root"):
        raise ValueError(f"download: expected True, False or 'root', got {download!r}")
    if root is not None:
        path = Path(os.fspath(root)).expanduser()
        if path.is_file():
            reason, _ = _diagnose(key, path)
            if reason is not None:  # a file that is certainly not this data set's archive
                raise ValueError(f"{spec['title']} data: {reason}")
    loc, tried = _find(spec, names, root)
    if loc is not None:
        return loc
    if root is None:
        if not download:
            raise _not_found(spec, tried, root, "Download is disabled (download=False / --no-download).")
        return ("tar", _fetch(spec, default_cache_dir(), tried, root, progress))
    reason, cifar_like = _diagnose(key, path)
    if download == "root" and not cifar_like:
        return ("tar", _fetch(spec, path, tried, root, progress))
    if cifar_like:
        tail = f"Nothing was downloaded; {path} is left untouched."
    elif not download:
        tail = "Download is disabled (download=False / --no-download)."
    else:
        tail = (f"Nothing was downloaded. To download {spec['title']} ({spec['archive']}, "
                f"md5-checked) into {path}, add --download (API: download='root'); without "
                f"--data-dir the data is looked for in $ADDERCORE_DATA and {default_cache_dir()} "
                f"and downloaded into the latter.")
    raise DataNotFoundError(f"{spec['title']} data not found: {reason}\n{tail}")


def _load(key, root, train, download, labels="fine", progress=True):
    spec = CIFAR_SPECS[key]
    if labels not in spec["labels"]:
        raise ValueError(f"labels: expected one of {sorted(spec['labels'])}, got {labels!r}")
    label_key, num_classes = spec["labels"][labels]
    names = spec["train"] if train else spec["test"]
    kind, path = _locate(key, names, root, download, progress)
    if kind == "dir":
        parts = _read_dir(path, names, label_key, num_classes)
    else:
        parts = _read_tar(path, spec, names, label_key, num_classes)
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    targets = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return np.ascontiguousarray(images), targets


def load_cifar10(root=None, train=True, download=True, progress=True):
    """CIFAR-10 → ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``; N = 50000 or 10000.

    root: the extracted folder, its parent, the archive, or a directory holding the archive;
    ``None`` searches ``$ADDERCORE_DATA`` then ``~/.cache/addercore``.
    download: what to do when the data is not found. ``True`` (default): download the official
    archive (md5-checked) into ``~/.cache/addercore``, but only when ``root`` is ``None``; an
    explicit ``root`` is never downloaded into (a mistyped path must not start a 170 MB
    download). ``"root"``: download into the explicit ``root`` (created if absent), unless it
    holds something CIFAR-like (an incomplete folder, the other CIFAR data set), which is
    reported instead. ``False``: never download.
    Raises :class:`DataNotFoundError` (a ``FileNotFoundError``) when the data is unavailable;
    for an explicit ``root`` its message says what is wrong there (absent, which batch files
    are missing, CIFAR-100 given for CIFAR-10 -> ``--dataset``, the data one level further
    down -> the path to use). ``ValueError`` names the file for truncated/corrupt batches, a
    wrong archive or a bad ``download`` value.
    """
    return _load("cifar10", root, train, download, progress=progress)


def load_cifar100(root=None, train=True, download=True, labels="fine", progress=True):
    """CIFAR-100 → ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    ``labels="fine"`` (100 classes, default) or ``"coarse"`` (20 superclasses). Other
    arguments as :func:`load_cifar10`.
    """
    return _load("cifar100", root, train, download, labels=labels, progress=progress)
