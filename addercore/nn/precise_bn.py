"""BatchNorm re-estimation ("precise BN"): exact population statistics of the training data.

During training, ``running_mean`` / ``running_var`` are exponential averages (momentum 0.1) of
batch statistics taken while the weights move. Early in AdderNet training, with a high learning
rate, the adder layers' outputs move fast and the averages lag far behind them: eval mode (which
uses the running statistics) can sit near chance while the weights classify well with batch
statistics. :func:`recalibrate_batchnorm` replaces the running statistics by the exact mean and
variance over a set of training images, with the weights fixed (Wu & Johnson, "Rethinking
'Batch' in BatchNorm", 2021, call this precise BN).
"""
import numpy as np

from ..tensor import Tensor, no_grad
from .layers import BatchNorm2d

__all__ = ["recalibrate_batchnorm"]


class _Moments:
    """Per-channel count, mean and sum of squared deviations (float64), merged batch by batch
    with Chan et al.'s pairwise update, which stays exact when the mean dwarfs the spread (adder
    outputs are large negative distances)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x):
        x = np.asarray(x, dtype=np.float64)
        nb = x.shape[0] * x.shape[2] * x.shape[3]
        mb = x.mean(axis=(0, 2, 3))
        m2b = ((x - mb[None, :, None, None]) ** 2).sum(axis=(0, 2, 3))
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n


def recalibrate_batchnorm(model, batches):
    """Set every ``BatchNorm2d`` of ``model`` to the population statistics of ``batches``.

    ``batches``: an iterable of inputs (arrays or Tensors of shape (N, C, H, W) as ``model``
    takes them, already normalised) or of ``(inputs, labels)`` pairs (labels ignored). Each batch
    runs through ``model`` in **training mode** without gradients, as during training (every
    BatchNorm normalises with its batch's statistics), and the input of every BatchNorm layer is
    accumulated. Afterwards ``running_mean`` is the exact mean and ``running_var`` the exact
    unbiased variance (``/(n - 1)``, PyTorch's convention for the running variance) over all the
    ``n = images × H × W`` values per channel, cast to the buffer's dtype. Parameters,
    ``num_batches_tracked`` and the model's train/eval mode are unchanged. Equal batch sizes (as in
    training) give the statistics training would converge to with the weights frozen.

    Returns the number of images used. Raises ValueError when ``model`` has no BatchNorm2d or
    ``batches`` is empty.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BatchNorm2d)]
    if not layers:
        raise ValueError(f"recalibrate_batchnorm: {type(model).__name__} has no BatchNorm2d")
    moments = {name: _Moments() for name, _ in layers}
    saved = {name: np.array(m.num_batches_tracked, copy=True) for name, m in layers}
    was_training = model.training
    originals = {}

    def capture(name, forward):
        def forward_and_record(x, *args, **kwargs):
            moments[name].add(x.data)
            return forward(x, *args, **kwargs)
        return forward_and_record

    images = 0
    try:
        for name, m in layers:  # the layer's own forward, wrapped on this instance only
            originals[name] = m.forward
            object.__setattr__(m, "forward", capture(name, m.forward))
        model.train()
        with no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
                model(x)
                images += x.shape[0]
    finally:
        for name, m in layers:
            if name in originals:
                del m.__dict__["forward"]
        model.train(was_training)
    if images == 0:
        raise ValueError("recalibrate_batchnorm: batches is empty")
    for name, m in layers:
        mo = moments[name]
        m.running_mean = mo.mean.astype(m.running_mean.dtype)
        m.running_var = (mo.m2 / max(mo.n - 1, 1)).astype(m.running_var.dtype)
        m.num_batches_tracked = saved[name]
    return images
