"""Synchronised BatchNorm: training-mode statistics over the global batch of all ranks.

Forward: every rank reduces its per-channel count, mean and sum of squared deviations (float64)
and merges them in rank order with Chan et al.'s pairwise update (exact when the mean dwarfs the
spread, as with adder outputs), so every rank normalises with the mean and biased variance of
the whole global batch and updates the running statistics identically (momentum, unbiased
variance, as :class:`~addercore.nn.BatchNorm2d`). Backward: the per-channel sums of the output
gradient and of gradient × normalised input are summed over ranks (rank order, float64) before
the input gradient ``w·invstd·(g − Σg/M − x̂·Σgx̂/M)`` is formed (``M`` = global count), which is
the gradient of one BatchNorm over the global batch. The weight and bias gradients stay local:
the data-parallel gradient sum adds them up like every other parameter gradient.

The arithmetic is numpy in float64 (cast to the model's dtype at the end), not the compiled
kernels: slower than per-rank BatchNorm, and meant for runs that must reproduce one process.
"""
import weakref

import numpy as np

from ..nn import BatchNorm2d
from ..tensor import Tensor

__all__ = ["SyncBatchNorm2d", "convert_sync_batchnorm", "sync_batch_norm2d", "merge_moments"]


def merge_moments(rows, channels):
    """Merge per-rank ``[count, mean (C), M2 (C)]`` rows (``(size, 1 + 2C)``, rank order) into
    the global ``(count, mean, M2)`` by Chan et al.'s pairwise update, rank 0 first."""
    n, mean, m2 = 0.0, np.zeros(channels), np.zeros(channels)
    for row in rows:
        nb = row[0]
        if nb == 0:
            continue
        mb, m2b = row[1:1 + channels], row[1 + channels:]
        total = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta * delta * (n * nb / total)
        n = total
    return n, mean, m2


def _tensor(value):
    return value if isinstance(value, Tensor) else Tensor(value)


def sync_batch_norm2d(x, weight, bias, running_mean, running_var, momentum, eps, comm,
                      residual=None, relu=False):
    """Training-mode BatchNorm2d over the global batch of ``comm``'s ranks (see the module
    docstring); ``relu=True``: ``max(bn(x) + residual, 0)``. x (n, C, H, W) on this rank, with
    ``n >= 1``; running buffers (C,) are updated in place. Returns a Tensor of x's shape/dtype."""
    x, weight, bias = _tensor(x), _tensor(weight), _tensor(bias)
    residual = None if residual is None else _tensor(residual)
    xd = x.data
    dtype = xd.dtype
    n, c, h, w = xd.shape
    x64 = xd.astype(np.float64)
    local_mean = x64.mean(axis=(0, 2, 3))
    centered = x64 - local_mean[None, :, None, None]
    local_m2 = np.einsum("nchw,nchw->c", centered, centered)
    del centered
    rows = comm.allgather_rows(np.concatenate(([n * h * w], local_mean, local_m2)),
                               "sync-BN statistics")
    count, mean, m2 = merge_moments(rows, c)
    var = m2 / count
    invstd = 1.0 / np.sqrt(var + eps)
    if running_mean is not None:
        unbiased = m2 / max(count - 1, 1)
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
        running_var *= 1.0 - momentum
        running_var += momentum * unbiased
    w_arr, b_arr = weight.data, bias.data  # the arrays this forward used (the optimiser steps later)
    scale = (w_arr.astype(np.float64) * invstd)[None, :, None, None]
    shift = (b_arr.astype(np.float64) - mean * w_arr.astype(np.float64) * invstd)[None, :, None, None]

    def apply():
        y = xd.astype(np.float64) * scale + shift
        if residual is not None:
            y += residual.data
        if relu:
            np.maximum(y, 0.0, out=y)
        return y.astype(dtype)

    y = apply()
    del x64

    def backward(g):
        g64 = np.asarray(g, dtype=np.float64)
        if relu:
            g64 = g64 * (out_ref().data > 0)
        if residual is not None:
            residual._accumulate(g64.astype(dtype))
        xhat = (xd.astype(np.float64) - mean[None, :, None, None]) * invstd[None, :, None, None]
        sum_g = g64.sum(axis=(0, 2, 3))
        sum_gx = np.einsum("nchw,nchw->c", g64, xhat)
        total = comm.sum_rows(np.concatenate((sum_g, sum_gx)), "sync-BN backward")
        mean_g, mean_gx = total[:c] / count, total[c:] / count
        coef = (w_arr.astype(np.float64) * invstd)[None, :, None, None]
        grad_x = coef * (g64 - mean_g[None, :, None, None] - xhat * mean_gx[None, :, None, None])
        x._accumulate(grad_x.astype(dtype))
        weight._accumulate(sum_gx.astype(dtype))
        bias._accumulate(sum_g.astype(dtype))

    parents = (x, weight, bias) if residual is None else (x, weight, bias, residual)
    out = Tensor._from_op(y, parents, backward, "sync_batch_norm2d", apply)
    out_ref = weakref.ref(out)
    return out


class SyncBatchNorm2d(BatchNorm2d):
    """:class:`~addercore.nn.BatchNorm2d` whose training-mode statistics are those of the
    global batch over the ranks of ``self.comm`` (eval mode: unchanged, running statistics).
    Same parameters, buffers and state-dict names; made by :func:`convert_sync_batchnorm`."""

    def forward(self, x, residual=None, relu=False):
        if not self.training:
            return super().forward(x, residual, relu)
        if residual is not None and not relu:
            raise ValueError("BatchNorm2d: residual is only supported with relu=True "
                             "(add it yourself for BatchNorm → + residual without ReLU)")
        self.num_batches_tracked = np.asarray(self.num_batches_tracked + 1, dtype=np.int64)
        return sync_batch_norm2d(x, self.weight, self.bias, self.running_mean, self.running_var,
                                 self.momentum, self.eps, self.comm, residual, relu)


def convert_sync_batchnorm(model, comm):
    """Turn every ``BatchNorm2d`` of ``model`` into a :class:`SyncBatchNorm2d` over ``comm``
    (in place: same objects, parameters and buffers); returns the number converted."""
    converted = 0
    for m in model.modules():
        if type(m) is BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
            converted += 1
        if isinstance(m, SyncBatchNorm2d):
            object.__setattr__(m, "comm", comm)
    return converted
