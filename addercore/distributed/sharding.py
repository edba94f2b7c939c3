"""Each rank's share of every global batch."""
import numpy as np

from ..data import BatchLoader
from ..data.loader import _generator
from ..data.transforms import normalize, random_crop_flip
from .comm import shard_bounds

__all__ = ["ShardedBatchLoader"]


class ShardedBatchLoader(BatchLoader):
    """:class:`~addercore.data.BatchLoader` of the **global** batches (``batch_size`` is the
    global batch), yielding rank ``rank``'s contiguous share of each (``shard_bounds``).

    Every rank draws the same permutation of epoch ``e`` and the same augmentation of batch
    ``k`` (from ``(seed, e, k)``, as one process does), so the ranks' shares put together are
    exactly one process's batch. The whole global batch is augmented on every rank (the
    augmentation draws per image in batch order; a few ms, against a step of seconds) and only
    the share is normalised. Position and ``state_dict`` count global batches: they do not
    depend on the number of ranks.
    """

    def __init__(self, images, labels, batch_size, rank, size, **kwargs):
        super().__init__(images, labels, batch_size, **kwargs)
        if not (isinstance(size, int) and size >= 1 and isinstance(rank, int)
                and 0 <= rank < size):
            raise ValueError(f"rank/size: expected 0 <= rank < size, got {rank!r}/{size!r}")
        self.rank, self.size = rank, size

    def global_batch_size(self, k):
        """Images in global batch ``k`` of an epoch (the last one may be smaller)."""
        return max(0, min(self.batch_size, self.num_samples - k * self.batch_size))

    def shard(self, k):
        """``(lo, hi)``: this rank's slice of global batch ``k``."""
        return shard_bounds(self.global_batch_size(k), self.rank, self.size)

    def _make(self, order, epoch, k):
        idx = order[k * self.batch_size:(k + 1) * self.batch_size]
        lo, hi = shard_bounds(len(idx), self.rank, self.size)
        imgs = self.images[idx]
        if self.augment:
            imgs = random_crop_flip(imgs, _generator(self.seed, epoch, k), padding=self.padding)
        return normalize(imgs[lo:hi], self.mean, self.std, self.dtype), self.labels[idx[lo:hi]]

    def smallest_share(self):
        """The fewest images any rank gets in a batch of an epoch (``s // size`` for the
        smallest global batch ``s``: the last one, or a full one)."""
        n, b = self.num_samples, self.batch_size
        return min(b, n, n % b or b) // self.size
