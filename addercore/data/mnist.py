"""MNIST from idx files (raw or ``.gz``), for LeNet-5-BN.

Looks in ``root``, ``root/MNIST/raw`` (torchvision's layout) and ``root/mnist`` for
``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` / ``t10k-images-idx3-ubyte`` /
``t10k-labels-idx1-ubyte`` (also with ``.`` instead of the last ``-``), optionally ``.gz``.
No download: MNIST's hosting moves; get the four files and point ``root`` at them.
"""
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .download import DataNotFoundError

__all__ = ["load_mnist", "read_idx"]

# idx type codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path, *, max_bytes=None):
    """Read one idx file (raw or gzip) → numpy array in native byte order.

    The header's dimensions are checked before the data is read: the data may not exceed
    ``max_bytes`` (default: 16x the file size + 64 MiB, so a small gzip cannot inflate to
    gigabytes) and must match the file exactly. Raises ``ValueError`` naming the file when it
    is truncated, malformed or oversized.
    """
    path = Path(path)
    size = os.stat(path).st_size
    limit = 16 * size + (64 << 20) if max_bytes is None else int(max_bytes)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise ValueError(f"{path}: not an idx file (bad magic {magic.hex()})")
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            ndim = magic[3]
            dims = f.read(4 * ndim)
            if len(dims) != 4 * ndim:
                raise ValueError(f"{path}: truncated idx header")
            shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
            n = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            if n > limit:
                raise ValueError(f"{path}: idx header declares shape {shape} = {n} bytes, more than "
                                 f"the limit of {limit} bytes for a file of {size} bytes")
            raw = f.read(n)
            extra = len(f.read(1))
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({e})") from e
    if len(raw) != n or extra:
        raise ValueError(f"{path}: idx data has {len(raw) + extra}{'+' if extra else ''} bytes, "
                         f"expected {n} for shape {shape} (truncated or corrupt)")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _find_file(dirs, stem):
    alt = stem[::-1].replace("-", ".", 1)[::-1]  # train-images-idx3-ubyte -> train-images.idx3-ubyte
    for d in dirs:
        for name in (stem, alt):
            for suffix in ("", ".gz"):
                p = d / (name + suffix)
                if p.is_file():
                    return p
    return None


def load_mnist(root, train=True):
    """MNIST → ``(images uint8 (N, 1, 28, 28), labels int64 (N,))``; N = 60000 or 10000."""
    root = Path(os.fspath(root)).expanduser()
    dirs = [root, root / "MNIST" / "raw", root / "mnist"]
    prefix = "train" if train else "t10k"
    img_p = _find_file(dirs, f"{prefix}-images-idx3-ubyte")
    lab_p = _find_file(dirs, f"{prefix}-labels-idx1-ubyte")
    if img_p is None or lab_p is None:
        where = "\n".join(f"  {d}" for d in dirs)
        raise DataNotFoundError(
            f"MNIST data not found: looked for {prefix}-images-idx3-ubyte[.gz] and "
            f"{prefix}-labels-idx1-ubyte[.gz] in:\n{where}\n"
            "To provide it: download the four MNIST idx files and pass their directory as root.")
    images = read_idx(img_p)
    labels = read_idx(lab_p)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_p}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{lab_p}: expected {images.shape[0]} labels, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{lab_p}: labels outside [0, 9]")
    return images[:, None, :, :].copy(), labels.astype(np.int64)
