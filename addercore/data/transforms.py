"""Normalisation and augmentation on whole batches (vectorised numpy, no per-image loop).

Constants: the authors' recipe (method §8) normalises CIFAR-10 with ``CIFAR10_MEAN`` /
``CIFAR10_STD`` — note that this std is the widely copied value (the true per-channel pixel std
is about 0.247, 0.243, 0.261); we keep it because it produced the published checkpoint.
The authors' code uses the same constants for CIFAR-100, and so does addercore by default;
``CIFAR100_MEAN`` / ``CIFAR100_STD`` are CIFAR-100's own training statistics, as an option.
"""
import numpy as np

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "MNIST_MEAN", "MNIST_STD",
    "normalize", "random_crop_flip",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def _check_batch(name, batch):
    if not isinstance(batch, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array (N, C, H, W), got {type(batch).__name__}")
    if batch.ndim != 4:
        raise ValueError(f"{name}: expected shape (N, C, H, W), got shape {batch.shape}")


def normalize(images, mean=CIFAR10_MEAN, std=CIFAR10_STD, dtype=np.float32, out=None):
    """``(images / 255 - mean) / std`` per channel.

    images: uint8 (N, C, H, W); mean, std: C floats (pixel/255 units). Returns ``dtype``
    (float32 or float64) array (N, C, H, W), written into ``out`` if given.
    """
    _check_batch("images", images)
    if images.dtype != np.uint8:
        raise TypeError(f"images: expected dtype uint8, got {images.dtype}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    c = images.shape[1]
    if mean.shape != (c,) or std.shape != (c,):
        raise ValueError(f"mean/std: expected {c} values (one per channel of images {images.shape}), "
                         f"got {mean.shape[0]} and {std.shape[0]}")
    if np.any(std <= 0):
        raise ValueError(f"std: expected positive values, got {tuple(std)}")
    # One fused multiply-add per pixel: x * (1/(255 std)) + (-mean/std), computed in float64
    # constants so float32 results do not depend on the operation order chosen here.
    scale = (1.0 / (255.0 * std)).astype(dtype)[:, None, None]
    bias = (-mean / std).astype(dtype)[:, None, None]
    if out is None:
        out = np.empty(images.shape, dtype=dtype)
    elif out.shape != images.shape or out.dtype != dtype:
        raise ValueError(f"out: expected {images.shape} {dtype}, got {out.shape} {out.dtype}")
    np.multiply(images, scale, out=out, casting="unsafe")
    out += bias
    return out


def random_crop_flip(batch, rng, padding=4, flip=True):
    """Random ``H×W`` crop of each image zero-padded by ``padding``, then random horizontal flip.

    batch: (N, C, H, W) any dtype; rng: ``np.random.Generator``. Returns a new array of the
    same shape and dtype. Padding is 0 in the input's units: apply it to uint8 images before
    :func:`normalize`, as torchvision's ``RandomCrop(32, padding=4)`` does on PIL images.
    Random draws, in order: row offsets (N), column offsets (N), flips (N) — so results are
    a deterministic function of the generator state.
    """
    _check_batch("batch", batch)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected np.random.Generator, got {type(rng).__name__}")
    if not isinstance(padding, (int, np.integer)) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding: expected an int >= 0, got {padding!r}")
    n, c, h, w = batch.shape
    p = int(padding)
    oy = rng.integers(0, 2 * p + 1, size=n)
    ox = rng.integers(0, 2 * p + 1, size=n)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    if n == 0:
        return batch.copy()
    padded = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=batch.dtype)
    padded[:, :, p:p + h, p:p + w] = batch
    # windows[n, c, y, x, :, :] is the h×w crop at offset (y, x): a strided view, no copy.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
    out = windows[np.arange(n), :, oy, ox]  # advanced indices split by ':' -> (n, c, h, w)
    if flips.any():
        out[flips] = out[flips][..., ::-1]
    return out
