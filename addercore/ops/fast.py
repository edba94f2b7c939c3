"""Compiled (Cython/OpenMP) implementations of the ops in :mod:`addercore.ops.reference`.

Same names, same signatures, same results (bit for bit for the adder forward; within
floating-point tolerance elsewhere) as the reference.  Arguments arrive validated and
normalised by :mod:`addercore.ops`: C-contiguous arrays of one dtype (float32 or float64),
``stride``/``padding`` int pairs (or ints), and the sliding-window ops the
:class:`~addercore.ops.geometry.Conv2dGeometry` validation built (``geometry=``).  Importing this module raises ImportError when the extension
is not compiled, and :mod:`addercore._backend` then falls back to the reference.

Threads: every call reads :func:`addercore.threads.get_num_threads`; results do not depend on it.

Memory: each call allocates its outputs (and, for the backward, a (K, Cout) transposed copy of
the filters, at most 147 KiB in ResNet-20).  Workspaces (per thread: one packed-patch tile
of K × (a run of output positions) elements, ~128 KiB forward and up to ~1 MiB backward
(TILE_BYTES), and the column planes of one input
image, ``_adder.source_size``, about kw/sw times the image; for the backward also the planes'
gradient, the transposed grad_output tile, and the per-slot filter-gradient partial sums of
``slots × Cout × K``) are cached per Python thread and dtype and grown on demand, so the hot
path of a training loop allocates nothing large after the first step.
"""
import functools
import math
import threading

import numpy as np

from addercore_ext import _adder  # ImportError here selects the numpy backend
from addercore_ext import _batchnorm

from ..threads import get_num_threads
from .geometry import Conv2dGeometry, pair
from .options import default_input_grad

__all__ = [
    "adder2d_forward",
    "adder2d_backward",
    "conv2d_forward",
    "conv2d_backward",
    "batch_norm2d_forward",
    "batch_norm2d_backward",
    "batch_norm2d_relu_forward",
    "batch_norm2d_relu_backward",
    "batch_norm2d_relu_apply",
    "relu_backward",
    "im2col",
    "col2im",
    "simd",
    "clear_workspaces",
]

#: Most fixed image ranges ("slots") the backward reduces the filter gradient over.  Their
#: number depends on the shapes only (_backward_slots), never on the thread count, which keeps
#: the summation order (and so the result) identical for any number of threads.
MAX_BACKWARD_SLOTS = 16

#: Fewest output positions per backward slot when the batch is small.  Each slot writes a
#: (Cout, K) filter-gradient partial and reduce_slots reads it back: a fixed cost worth about
#: 10-30 positions of kernel work, whatever Cout and K.  Slots of one 7x7 image (49 positions)
#: or one width-1 column (32) lost 10-25% to it (issue 14 §1; RESULTS.md, "Session 8"), so a
#: small batch gets fewer, longer slots (see _backward_slots).  Shapes only, never threads.
MIN_SLOT_POSITIONS = 96

#: Filter banks smaller than this (bytes) are transposed by one thread: waking the second
#: costs more than it saves below ~1 MiB (36 K floats: 7 us on one thread, 16 us on two).
TRANSPOSE_PARALLEL_BYTES = 1 << 20

#: Bytes per tile (a tile is a run of consecutive output positions of one image) of what its
#: kernels keep in the core's L2 cache: forward, the packed patches; backward, the patches,
#: the grad_output tile and its transpose (see _tile_positions).  The backward's larger
#: budget (a 1 MiB L2) buys long filters over few positions one tile per image: each tile
#: streams the filters and the filter-gradient partial once (issue 14 §1; measured in
#: benchmarks/RESULTS.md, "Kernel speed against output width").
TILE_BYTES = {"forward": 128 * 1024, "backward": 1024 * 1024}

#: Fewest forward register blocks of positions per tile, whatever TILE_BYTES allows (a tile
#: streams every filter once; very short tiles of very long filters would make that dominate).
TILE_MIN_BLOCKS = 2

#: Workspaces start on a cache line (and per-thread rows of them too: see _workspace).
ALIGN_BYTES = 64

_INPUT_MODES = {
    "hardtanh": _adder.INPUT_GRAD_HARDTANH,
    "sign": _adder.INPUT_GRAD_SIGN,
}

_local = threading.local()


def simd():
    """Instruction set the kernels were compiled for ("avx2+fma" or "scalar")."""
    return _adder.simd_name()


def clear_workspaces():
    """Release the cached workspaces of the calling thread."""
    _local.__dict__.clear()


def _workspace(name, dtype, shape, zero=False, align_rows=False):
    """A cached array of ``shape`` and ``dtype`` starting on a cache line (ALIGN_BYTES);
    reallocated only when larger.  With ``align_rows`` (2-D, one row per thread) every row
    starts on a cache line too: the rows are padded to whole lines, so the view may have more
    columns than asked for (the drivers take rows at least as long as they need).  (A few
    microseconds at most: a small layer's whole call costs tens of them.)

    Why aligned: the kernels load whole vectors along a row; from numpy's 16-byte alignment
    every other 32-byte load (every 64-byte one) straddles two cache lines, which the hot
    loops pay for on every tap."""
    key = (name, dtype.char)
    per_line = ALIGN_BYTES // dtype.itemsize
    alloc = shape
    if align_rows:
        rows, cols = shape
        alloc = (rows, -(-cols // per_line) * per_line)
    size = max(math.prod(alloc), 1)
    buf = _local.__dict__.get(key)
    if buf is None or buf.size < size:
        raw = np.empty(size * dtype.itemsize + ALIGN_BYTES, dtype=np.uint8)
        start = -raw.ctypes.data % ALIGN_BYTES
        buf = raw[start:start + size * dtype.itemsize].view(dtype)
        _local.__dict__[key] = buf
    view = buf[:math.prod(alloc)].reshape(alloc)
    if zero:
        view.fill(0)
    return view


def _tile_positions(k, itemsize, which, cout=0):
    """Output positions per packed tile (consecutive, across row ends): as many whole forward
    register blocks as fit TILE_BYTES[which], at least TILE_MIN_BLOCKS.  Independent of the
    output width, so the kernels' speed per tap is too.

    Forward: the budget is the packed patches (K per position), which every filter block
    re-reads.  Backward (``cout`` given): the patches plus the grad_output tile and its
    transpose (K + 2·Cout per position): the backward kernels loop taps outermost, so it is
    the grad_output tile they re-read, while the patches, the filters and the filter-gradient
    partial stream through once per tile.  Those streams cost per tile, so long filters
    want tiles as long as the budget allows (one tile per image at 7x7 / 14x14 maps)."""
    block = _adder.FORWARD_BLOCK_F32 if itemsize == 4 else _adder.FORWARD_BLOCK_F64
    blocks = TILE_BYTES[which] // max(1, (k + 2 * cout) * itemsize * block)
    return int(block * max(TILE_MIN_BLOCKS, blocks))


def _source_size(geo):
    """Elements of one image's packing source (column planes, adder_pack.h)."""
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    return _adder.source_size(geo.cin, geo.h, geo.w, geo.kh, geo.kw, sh, sw, ph, pw, dh, dw)


def _geometry(x, weight, stride, padding, geometry):
    """The geometry validation built, or (called directly) one from the shapes."""
    if geometry is None:
        try:
            geometry = _cached_geometry(x.shape, weight.shape, stride, padding)
        except TypeError:  # unhashable stride/padding (a list): not cached
            geometry = Conv2dGeometry.from_shapes(x.shape, weight.shape, stride, padding)
    return geometry


@functools.lru_cache(maxsize=256)
def _cached_geometry(x_shape, weight_shape, stride, padding):
    """Conv2dGeometry.from_shapes, memoised (it is frozen; building one costs ~10 us, as
    much as the arithmetic of a small layer)."""
    return Conv2dGeometry.from_shapes(x_shape, weight_shape, stride, padding)


def adder2d_forward(x, weight, stride=1, padding=0, norm="l1", geometry=None):
    """Adder forward. x (N, Cin, H, W), weight (Cout, Cin, kh, kw) -> y (N, Cout, Ho, Wo).

    ``norm="l1"``: ``y = -Σ |Xp_patch - F|``; ``"l2"``: ``y = -Σ (Xp_patch - F)²``, both summed
    in the canonical order (bit-identical to the reference).  Allocates ``y``; uses the cached
    ``threads × K·tile`` patch workspace (tile: a run of output positions, ~128 KiB).
    """
    geo = _geometry(x, weight, stride, padding, geometry)
    y = np.empty(geo.out_shape, dtype=x.dtype)
    if y.size == 0:
        return y
    mode = _adder.FORWARD_L2 if norm == "l2" else _adder.FORWARD_L1
    _tiled_forward(x, weight, y, geo, mode)
    return y


def _tiled_forward(x, weight, y, geo, mode):
    """Run the tiled forward driver into ``y`` with the cached per-thread workspaces."""
    (sh, sw), (ph, pw), (ho, wo), k = geo.stride, geo.padding, geo.out_hw, geo.k
    threads = max(1, min(get_num_threads(), geo.n))
    tile = _tile_positions(k, x.itemsize, "forward")
    cap = _adder.tile_capacity(ho * wo, tile, x.itemsize)
    col = _workspace("col", x.dtype, (threads, k * cap), align_rows=True)
    xpad = _workspace("padded_image", x.dtype, (threads, _source_size(geo) + _adder.PAD_SLACK),
                      align_rows=True)
    _adder.adder_forward(x, weight.reshape(geo.cout, -1), y, geo.kh, geo.kw, sh, sw, ph, pw,
                         mode, tile, col, xpad, threads, geo.groups, *geo.dilation)


def adder2d_backward(x, weight, grad_output, stride=1, padding=0, norm="l1", filter_grad="full",
                     input_grad=None, geometry=None):
    """Adder backward (substituted gradients, method §4; modes §4.4) -> (grad_input, grad_weight).

    Filter gradient ``full``: ``Σ X·G - F·Σ G`` (×2 for ℓ2) accumulated per slot of images
    from the packed patches; ``sign``: ``Σ sgn(D)·G``.  Input gradient ``hardtanh``:
    ``Σ_t clip(-D, -1, 1)·G``; ``sign`` (and ``exact`` for ℓ1): ``Σ_t -sgn(D)·G``; ``exact``
    for ℓ2: ``Σ_t -2·D·G``; gathered into the input positions (padding taps dropped).
    Allocates the two outputs; uses the cached patch workspace (threads × K·tile, < 1 MiB each),
    the transposed filters and the slot partials (slots × Cout × K, slots = min(N, 16)).  The patches are packed once per image
    and shared by both gradients.
    """
    if x.shape[0] == 0:
        return np.empty_like(x), np.zeros_like(weight)
    if input_grad is None:
        input_grad = default_input_grad(norm)
    if input_grad == "hardtanh":
        mode = _adder.INPUT_GRAD_HARDTANH
    elif norm == "l2" and input_grad == "exact":
        mode = _adder.INPUT_GRAD_L2
    else:
        mode = _adder.INPUT_GRAD_SIGN
    filter_sign = filter_grad == "sign"
    geo = _geometry(x, weight, stride, padding, geometry)
    # full: the rank-1 term F·Σ G (and ×2 for ℓ2) is applied by reduce_slots, chunk by chunk
    # as the partial is transposed back (at small calls, separate passes over Cout·K cost as
    # much as the kernels; the same operations as grad_weight -= weight·Σ G)
    rank1_scale = None if filter_sign else (2.0 if norm == "l2" else 1.0)
    grad_input, grad_weight = _tiled_backward(x, weight, grad_output, geo, filter_sign, mode,
                                              rank1_scale)
    return grad_input, grad_weight.reshape(weight.shape)


def _tiled_backward(x, weight, grad_output, geo, filter_sign, input_mode, rank1_scale=None):
    """Run the tiled backward driver -> (grad_input, grad_weight (Cout, K)): the slots'
    partials summed, and with ``rank1_scale`` s, ``(Σ_slots partial - F·Σ G)·s``.

    Uses the cached per-thread workspaces and per-slot partial sums; N must be > 0."""
    n, cout, kh, kw, k = geo.n, geo.cout, geo.kh, geo.kw, geo.k
    (sh, sw), (ph, pw), (ho, wo) = geo.stride, geo.padding, geo.out_hw
    dtype = x.dtype
    grad_input = np.empty_like(x)
    slots = _backward_slots(n, ho * wo)
    threads = max(1, min(get_num_threads(), slots))
    tile = _tile_positions(k, x.itemsize, "backward", cout)
    cap = _adder.tile_capacity(ho * wo, tile, x.itemsize)
    col = _workspace("col", dtype, (threads, max(k * cap, 1)), align_rows=True)
    g_t = _workspace("grad_output_t", dtype, (threads, max(2 * cout * cap, 1)), align_rows=True)
    # the column planes and their gradient
    xpad = _workspace("padded_image", dtype, (threads, 2 * _source_size(geo) + _adder.PAD_SLACK),
                      align_rows=True)
    # the full filter gradient writes each slot's first tile (zeroing would cost a pass over
    # slots·Cout·K elements, as much as a small batch's kernels for long filters)
    partial = _workspace("partial_grad_weight", dtype, (slots, cout, k),
                         zero=filter_sign or ho * wo == 0)
    partial_sum = _workspace("partial_grad_sum", dtype, (slots, cout), zero=True)
    # each group's filters transposed, group after group: (groups·K, Cout/groups)
    groups, og = geo.groups, geo.cout_group
    w_t = _workspace("weight_t", dtype, (groups, k, og))  # cached: see adder2d_backward
    _adder.transpose_filters(weight.reshape(cout, k), w_t.reshape(groups * k, og), groups,
                             threads if weight.nbytes >= TRANSPOSE_PARALLEL_BYTES else 1)
    _adder.adder_backward(
        x, w_t.reshape(groups * k, og), grad_output, grad_input, kh, kw, sh, sw, ph, pw,
        filter_sign, input_mode, tile, col, g_t, xpad, partial, partial_sum, threads,
        groups, *geo.dilation,
    )
    # the full filter gradient's slots hold each group's (K, Cout/groups) block transposed
    grad_weight = np.empty((cout, k), dtype)
    if rank1_scale is None:
        _adder.reduce_slots(partial, grad_weight, groups, not filter_sign, threads)
    else:
        _adder.reduce_slots(partial, grad_weight, groups, True, threads, weight.reshape(cout, k),
                            _sum_slots(partial_sum), rank1_scale)
    return grad_input, grad_weight


def _backward_slots(n, positions):
    """Number of image slots of the backward for a batch of ``n`` images of ``positions``
    output positions each: ``min(n, MAX_BACKWARD_SLOTS)``, unless that leaves fewer than
    MIN_SLOT_POSITIONS positions per slot; then the largest power of two (so that 2, 4, 8
    threads get equal shares) that does not, at least 1.  A function of the shapes only, so
    the summation order, and the result, are the same for any thread count."""
    full = min(n, MAX_BACKWARD_SLOTS)
    fit = n * positions // MIN_SLOT_POSITIONS
    if fit >= full:
        return full
    return 1 << (max(1, fit).bit_length() - 1)


def _sum_slots(partial):
    """Σ over the first axis, sequentially in slot order (fixed order, fresh array)."""
    total = partial[0].copy()
    for s in range(1, partial.shape[0]):
        total += partial[s]
    return total


def _im2col_2d(x, kernel, stride, padding, dilation=1):
    """Patch matrix of the whole batch, images side by side: (C·kh·kw, N·Ho·Wo), a fresh
    array (the public :func:`im2col`; the layers themselves pack per-thread tiles)."""
    n, c = x.shape[:2]
    kh, kw = pair(kernel)
    geo = Conv2dGeometry.from_shapes(x.shape, (1, c, kh, kw), stride, padding, dilation)
    (sh, sw), (ph, pw), (ho, wo) = geo.stride, geo.padding, geo.out_hw
    shape = (geo.k, n * ho * wo)
    cols = np.empty(shape, x.dtype)
    _adder.im2col(x, cols, kh, kw, sh, sw, ph, pw, ho, wo, get_num_threads(), *geo.dilation)
    return cols, ho, wo


def _col2im_2d(cols, x_shape, kernel, stride, padding, dilation=1):
    """Adjoint of :func:`_im2col_2d`: (C·kh·kw, N·Ho·Wo) summed into a new (N, C, H, W)."""
    kh, kw = pair(kernel)
    geo = Conv2dGeometry.from_shapes(x_shape, (1, x_shape[1], kh, kw), stride, padding, dilation)
    (sh, sw), (ph, pw), (ho, wo) = geo.stride, geo.padding, geo.out_hw
    x = np.empty(x_shape, dtype=cols.dtype)
    _adder.col2im(np.ascontiguousarray(cols), x, kh, kw, sh, sw, ph, pw, ho, wo,
                  get_num_threads(), *geo.dilation)
    return x


def im2col(x, kernel, stride, padding, dilation=1):
    """Patch matrices of x (N, C, H, W): (N, C·kh·kw, Ho·Wo), rows ordered (c, i, j)."""
    n = x.shape[0]
    cols, ho, wo = _im2col_2d(x, kernel, stride, padding, dilation)
    return np.ascontiguousarray(cols.reshape(cols.shape[0], n, ho * wo).transpose(1, 0, 2))


def col2im(cols, x_shape, kernel, stride, padding, dilation=1):
    """Adjoint of :func:`im2col`: sum (N, C·kh·kw, Ho·Wo) patches back into (N, C, H, W)."""
    n, k, p = cols.shape
    cols2d = np.ascontiguousarray(cols.transpose(1, 0, 2)).reshape(k, n * p)
    return _col2im_2d(cols2d, x_shape, kernel, stride, padding, dilation)


def conv2d_forward(x, weight, stride=1, padding=0, geometry=None):
    """Convolution (no bias) through the tiled adder drivers with a fused multiply-add per
    tap (``FORWARD_CONV``): per-thread packed tiles, no batch-sized patch matrix, no BLAS.
    Allocates y only; deterministic for any thread count (within rounding of a GEMM)."""
    geo = _geometry(x, weight, stride, padding, geometry)
    y = np.empty(geo.out_shape, dtype=x.dtype)
    if y.size == 0:
        return y
    if geo.k == 0:
        y.fill(0)
        return y
    _tiled_forward(x, weight, y, geo, _adder.FORWARD_CONV)
    return y


def conv2d_backward(x, weight, grad_output, stride=1, padding=0, geometry=None):
    """Convolution backward -> (grad_input, grad_weight) through the tiled backward driver
    (``INPUT_GRAD_CONV``): per image, the patches packed once feed ``Σ_p col·G`` (filter
    gradient, per-slot partials summed in slot order) and ``Σ_t W·G`` (patch-space input
    gradient, then col2im)."""
    if x.shape[0] == 0:
        return np.zeros_like(x), np.zeros_like(weight)
    geo = _geometry(x, weight, stride, padding, geometry)
    grad_input, grad_weight = _tiled_backward(x, weight, grad_output, geo, False,
                                              _adder.INPUT_GRAD_CONV)
    return grad_input, grad_weight.reshape(weight.shape)


# --------------------------------------------------------------------------------------------
# BatchNorm2d (alone or fused with + residual and ReLU) and ReLU backward
# (addercore_ext/_batchnorm.pyx: one channel per work unit)
# --------------------------------------------------------------------------------------------
def batch_norm2d_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """Same contract as the reference: returns ``(y, mean, invstd)`` ((N, C, H, W), (C,), (C,))
    and updates the running buffers in place when training. Statistics are summed per channel
    in double in a fixed order (interleaved accumulators, independent of the thread count).
    Allocates y and (C,) vectors."""
    return _batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum,
                               eps, None, False)


def batch_norm2d_relu_forward(x, weight, bias, running_mean, running_var, training, momentum,
                              eps, residual, return_stats=False):
    """Same contract as the reference: ``y = max(bn(x) + residual, 0)`` in the pass that writes
    y (no pre-ReLU array is made); ``(y, mean, invstd)``, plus ``stats`` = the float64 (mean,
    var) the kernel normalised with when ``return_stats``. Allocates y and (C,) vectors."""
    return _batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum,
                               eps, residual, True, return_stats)


def batch_norm2d_relu_apply(x, weight, bias, stats, eps, residual):
    """Same contract as the reference: y of :func:`batch_norm2d_relu_forward` again, bit for
    bit: the kernel's eval-mode path with the forward's float64 (mean, var) runs exactly the
    arithmetic of its training path after the statistics (invstd, scale, shift, y)."""
    n, c, h, w = x.shape
    mean, var = (np.array(s, dtype=np.float64) for s in stats)  # (C,) copies, writable
    y = np.empty_like(x)
    _batchnorm.batch_norm_forward(x.reshape(n, c, h * w), weight, bias, y.reshape(n, c, h * w),
                             mean, var, np.empty(c), False, eps, get_num_threads(),
                             None if residual is None else residual.reshape(n, c, h * w), True)
    return y


def _batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps,
                        residual, relu, return_stats=False):
    n, c, h, w = x.shape
    y = np.empty_like(x)
    mean = np.empty(c) if training else running_mean.astype(np.float64)
    var = np.empty(c) if training else running_var.astype(np.float64)
    invstd = np.empty(c)
    x3 = x.reshape(n, c, h * w)
    r3 = None if residual is None else residual.reshape(n, c, h * w)
    _batchnorm.batch_norm_forward(x3, weight, bias, y.reshape(n, c, h * w), mean, var, invstd,
                             training, eps, get_num_threads(), r3, relu)
    if training and running_mean is not None:
        count = n * h * w
        unbiased = var * (count / max(count - 1, 1))
        running_mean *= 1.0 - momentum
        running_mean += (momentum * mean).astype(running_mean.dtype)
        running_var *= 1.0 - momentum
        running_var += (momentum * unbiased).astype(running_var.dtype)
    out = (y, mean.astype(x.dtype), invstd.astype(x.dtype))
    return out + ((mean, var),) if return_stats else out


def batch_norm2d_backward(x, weight, grad_output, mean, invstd, training):
    """Same contract as the reference: ``(grad_input, grad_weight, grad_bias)``."""
    grad_input, grad_weight, grad_bias, _ = _batch_norm_backward(
        x, weight, None, grad_output, mean, invstd, training, False)
    return grad_input, grad_weight, grad_bias


def batch_norm2d_relu_backward(x, weight, output, grad_output, mean, invstd, training,
                               residual):
    """Same contract as the reference: ``grad_output`` masked by ``output > 0`` while it is
    read (no masked copy is made, except the residual's gradient when ``residual``);
    ``(grad_input, grad_weight, grad_bias, grad_residual or None)``."""
    return _batch_norm_backward(x, weight, output, grad_output, mean, invstd, training,
                                residual)


def _batch_norm_backward(x, weight, output, grad_output, mean, invstd, training, residual):
    n, c, h, w = x.shape
    shape3 = (n, c, h * w)
    grad_input = np.empty_like(x)
    grad_residual = np.empty_like(x) if residual else None
    grad_weight = np.empty(c)
    grad_bias = np.empty(c)
    _batchnorm.batch_norm_backward(
        x.reshape(shape3), weight, grad_output.reshape(shape3),
        mean.astype(np.float64), invstd.astype(np.float64), grad_input.reshape(shape3),
        grad_weight, grad_bias, training, get_num_threads(),
        None if output is None else output.reshape(shape3),
        None if grad_residual is None else grad_residual.reshape(shape3))
    return grad_input, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype), grad_residual


def relu_backward(x, grad_output):
    """grad_output where x > 0, else 0 (one pass, no temporaries)."""
    grad_input = np.empty_like(x)
    _batchnorm.relu_backward(x.reshape(-1), grad_output.reshape(-1), grad_input.reshape(-1),
                        get_num_threads())
    return grad_input
