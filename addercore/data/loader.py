"""Seeded, resumable mini-batch iterator with background preparation.

Determinism: epoch ``e`` shuffles with ``Generator(PCG64(SeedSequence([seed, e])))`` and batch
``k`` of epoch ``e`` is augmented with ``Generator(PCG64(SeedSequence([seed, e, k])))``. Every
batch is therefore a pure function of ``(seed, epoch, k)``: prefetching, interrupting and
resuming (``state_dict`` / ``load_state_dict``, mid-epoch included) draw exactly the batches of
an uninterrupted run.
"""
import concurrent.futures
import math

import numpy as np

from .transforms import CIFAR10_MEAN, CIFAR10_STD, normalize, random_crop_flip

__all__ = ["BatchLoader"]


def _generator(*key):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


class BatchLoader:
    """Iterate ``(x float (B, C, H, W) normalised, y int64 (B,))`` over ``(images, labels)``.

    images: uint8 (N, C, H, W); labels: integer (N,). ``augment`` applies
    :func:`~addercore.data.transforms.random_crop_flip` (pad 4, crop, flip) before
    normalisation. ``prefetch`` prepares the next batch in a background thread while the caller
    works on the current one. ``len(loader)`` is the number of batches per epoch.

    One pass of ``for x, y in loader`` runs the rest of the current epoch (all of it unless
    resumed mid-epoch) and then advances the epoch counter. ``state_dict()`` taken inside the
    loop body describes the batches consumed so far; ``load_state_dict`` on a fresh loader
    continues with the next one. Only one iteration may be active at a time.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, augment=False, seed=0,
                 drop_last=False, prefetch=True, dtype=np.float32,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, padding=4):
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
            desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise TypeError(f"images: expected uint8 array (N, C, H, W), got {desc}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise ValueError(f"labels: expected {images.shape[0]} integers (shape ({images.shape[0]},)), "
                             f"got {labels.dtype} {labels.shape}")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = bool(prefetch)
        self.dtype = dtype
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.padding = int(padding)
        normalize(images[:1], self.mean, self.std, dtype)  # validate mean/std against C now
        self._epoch = 0
        self._batch = 0  # next batch index within the epoch

    @property
    def num_samples(self):
        return self.images.shape[0]

    def __len__(self):
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self):
        """The epoch the next batch belongs to."""
        self._normalize_position()
        return self._epoch

    def set_epoch(self, epoch):
        """Start epoch ``epoch`` (int >= 0) at its first batch."""
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
        self._epoch, self._batch = int(epoch), 0

    def _normalize_position(self):
        if self._batch >= len(self):
            self._epoch, self._batch = self._epoch + 1, 0

    def order(self, epoch):
        """Sample indices of ``epoch`` (int64 (N,)), the permutation when shuffling."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return _generator(self.seed, epoch).permutation(self.num_samples)

    def _make(self, order, epoch, k):
        idx = order[k * self.batch_size:(k + 1) * self.batch_size]
        imgs = self.images[idx]
        if self.augment:
            imgs = random_crop_flip(imgs, _generator(self.seed, epoch, k), padding=self.padding)
        return normalize(imgs, self.mean, self.std, self.dtype), self.labels[idx]

    def __iter__(self):
        self._normalize_position()
        epoch, start, n = self._epoch, self._batch, len(self)
        order = self.order(epoch)
        if not self.prefetch:
            for k in range(start, n):
                batch = self._make(order, epoch, k)
                self._batch = k + 1
                yield batch
        else:
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="addercore-loader") as ex:
                fut = ex.submit(self._make, order, epoch, start) if start < n else None
                for k in range(start, n):
                    batch = fut.result()
                    fut = ex.submit(self._make, order, epoch, k + 1) if k + 1 < n else None
                    self._batch = k + 1  # consumed: state_dict() in the loop body is "after k"
                    yield batch
        if self._epoch == epoch and self._batch >= n:
            self._epoch, self._batch = epoch + 1, 0

    def state_dict(self):
        """JSON-serialisable position: ``{"seed", "epoch", "batch", "num_samples", "batch_size",
        "shuffle", "augment", "drop_last"}`` (``batch`` = batches of ``epoch`` already consumed)."""
        self._normalize_position()
        return {"seed": self.seed, "epoch": self._epoch, "batch": self._batch,
                "num_samples": self.num_samples, "batch_size": self.batch_size,
                "shuffle": self.shuffle, "augment": self.augment, "drop_last": self.drop_last}

    def load_state_dict(self, state):
        """Restore a position saved by :meth:`state_dict`; the configuration must match."""
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict from state_dict(), got {type(state).__name__}")
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        if missing:
            raise ValueError(f"state: missing keys {missing}")
        diff = [f"{k}: saved {state[k]!r}, this loader {mine[k]!r}" for k in
                ("seed", "num_samples", "batch_size", "shuffle", "augment", "drop_last")
                if state[k] != mine[k]]
        if diff:
            raise ValueError("state: saved loader configuration differs, resuming would draw "
                             "different batches: " + "; ".join(diff))
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if epoch < 0 or not 0 <= batch <= len(self):
            raise ValueError(f"state: invalid position epoch={epoch}, batch={batch} "
                             f"(batches per epoch: {len(self)})")
        self._epoch, self._batch = epoch, batch
