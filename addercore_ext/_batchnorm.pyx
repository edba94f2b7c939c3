# cython: language_level=3
"""BatchNorm2d (optionally fused with "+ residual" and ReLU) and ReLU-backward kernels
(float32/float64 via fused types).

Design
------
Every adder layer is followed by BatchNorm, so its cost is paid 19 times per ResNet-20 step;
numpy needs ~6 passes over the activation for the forward and ~8 for the backward, each with
a temporary. Here one channel is one unit of work: ``prange(C, schedule="static")`` gives each
thread whole channels, and inside a channel the sums over (n, h, w) run in a fixed order
(a few interleaved accumulators, so consecutive adds do not wait for each other), in double. So results do not depend on the thread count, and the
float32 statistics are more accurate than float32 pairwise sums (adder outputs are ~1e2-1e3
with small spread: the two-pass variance below avoids cancellation).

Fusion (BatchNorm → ReLU, BatchNorm → + residual → ReLU): the forward optionally adds a
``residual`` (same shape as x) and applies ReLU in the pass that writes y; the backward
optionally takes the op's ``output`` and masks ``grad_output`` by ``output > 0`` while it reads
it (the pre-ReLU tensor is never needed, so autograd keeps only the input and the output), and
writes the masked gradient as the residual's gradient when asked. The arithmetic is that of the
unfused chain, element by element: ``y = max(<floating>(bn(x)) + residual, 0)`` (the add in
the arrays' dtype, as numpy adds), and the sums see the masked gradient (0 where masked) in the
same order. So a fused op gives bit for bit (up to the sign of zeros) what this BatchNorm,
numpy's add and maximum, and the ReLU backward below give one after the other, for any thread
count.

Passes over memory: forward (train) 3 reads + 1 write (+1 read of the residual), backward
(train) 2 reads of x and g + 1 write (+1 more read of the output each time it reads g, +1 write
of the residual's gradient). No temporaries besides the (C,) statistics; no GIL.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt

ctypedef fused floating:
    float
    double


cdef extern from "relu_mask.h" nogil:
    double addercore_masked_f32(float g, float out)
    double addercore_masked_f64(double g, double out)


cdef inline double _masked(floating g, floating out) noexcept nogil:
    """g where out > 0, else 0 (NaN out masks too, as ReLU's backward), without a branch
    (relu_mask.h: the mask is ~50% random, a branch on it is mispredicted half the time)."""
    if floating is float:
        return addercore_masked_f32(g, out)
    else:
        return addercore_masked_f64(g, out)


def batch_norm_forward(const floating[:, :, ::1] x, const floating[::1] weight,
                       const floating[::1] bias, floating[:, :, ::1] y,
                       double[::1] mean, double[::1] var, double[::1] invstd,
                       bint training, double eps, int num_threads,
                       const floating[:, :, ::1] residual=None, bint relu=False):
    """x, y: (N, C, H·W); weight, bias: (C,). training: computes ``mean``/``var`` (biased) of
    each channel and writes them; else reads ``mean`` and ``var`` (running estimates).
    Writes ``invstd = 1/sqrt(var + eps)`` and ``y = (x - mean)·invstd·weight + bias``.

    ``residual`` (N, C, H·W) or None: added to y (in the arrays' dtype); ``relu``: then
    ``y = max(y, 0)`` (NaN propagates, as numpy's maximum)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2]
    cdef Py_ssize_t c, n, i
    cdef double s0, s1, s2, s3, d, m, scale, shift
    cdef floating v
    cdef double count = <double>(N * HW)
    cdef bint has_residual = residual is not None
    if has_residual and (residual.shape[0] != N or residual.shape[1] != C
                         or residual.shape[2] != HW):
        raise ValueError("residual must have the shape of x")
    for c in prange(C, schedule="static", nogil=True, num_threads=num_threads):
        if training:
            # four interleaved double accumulators (element i goes to i % 4 of each row; the
            # row tail to the first): no add waits for the previous one, and the order depends
            # on the shape only, never on the thread count
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for n in range(N):
                i = 0
                while i + 4 <= HW:
                    s0 = s0 + x[n, c, i]
                    s1 = s1 + x[n, c, i + 1]
                    s2 = s2 + x[n, c, i + 2]
                    s3 = s3 + x[n, c, i + 3]
                    i = i + 4
                while i < HW:
                    s0 = s0 + x[n, c, i]
                    i = i + 1
            m = ((s0 + s1) + (s2 + s3)) / count
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for n in range(N):
                i = 0
                while i + 4 <= HW:
                    d = x[n, c, i] - m
                    s0 = s0 + d * d
                    d = x[n, c, i + 1] - m
                    s1 = s1 + d * d
                    d = x[n, c, i + 2] - m
                    s2 = s2 + d * d
                    d = x[n, c, i + 3] - m
                    s3 = s3 + d * d
                    i = i + 4
                while i < HW:
                    d = x[n, c, i] - m
                    s0 = s0 + d * d
                    i = i + 1
            mean[c] = m
            var[c] = ((s0 + s1) + (s2 + s3)) / count
        invstd[c] = 1.0 / sqrt(var[c] + eps)
        scale = invstd[c] * weight[c]
        shift = bias[c] - mean[c] * scale
        if has_residual:
            for n in range(N):
                for i in range(HW):
                    v = <floating>(x[n, c, i] * scale + shift) + residual[n, c, i]
                    y[n, c, i] = 0 if (relu and v < 0) else v
        elif relu:
            for n in range(N):
                for i in range(HW):
                    v = <floating>(x[n, c, i] * scale + shift)
                    y[n, c, i] = 0 if v < 0 else v
        else:
            for n in range(N):
                for i in range(HW):
                    y[n, c, i] = <floating>(x[n, c, i] * scale + shift)


def batch_norm_backward(const floating[:, :, ::1] x, const floating[::1] weight,
                        const floating[:, :, ::1] grad_output, const double[::1] mean,
                        const double[::1] invstd, floating[:, :, ::1] grad_input,
                        double[::1] grad_weight, double[::1] grad_bias, bint training,
                        int num_threads, const floating[:, :, ::1] output=None,
                        floating[:, :, ::1] grad_residual=None):
    """x, grad_output, grad_input: (N, C, H·W). Writes grad_input and the per-channel
    ``grad_weight = Σ g·xhat`` and ``grad_bias = Σ g`` (C,).

    ``output`` (N, C, H·W) or None: the output of a fused BatchNorm(+ residual)→ReLU; then
    ``g = grad_output·[output > 0]`` replaces grad_output throughout. ``grad_residual`` (N, C,
    H·W) or None: receives that masked g (the gradient of the residual; needs ``output``)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2]
    cdef Py_ssize_t c, n, i
    cdef double sg, sg1, sgx, sgx1, g, g1, xhat, m, istd, scale, mean_g, mean_gx
    cdef double count = <double>(N * HW)
    cdef bint masked = output is not None
    cdef bint has_grad_residual = grad_residual is not None
    if masked and (output.shape[0] != N or output.shape[1] != C or output.shape[2] != HW):
        raise ValueError("output must have the shape of x")
    if has_grad_residual and (not masked or grad_residual.shape[0] != N
                              or grad_residual.shape[1] != C or grad_residual.shape[2] != HW):
        raise ValueError("grad_residual needs output and must have the shape of x")
    for c in prange(C, schedule="static", nogil=True, num_threads=num_threads):
        m = mean[c]
        istd = invstd[c]
        # Σ g and Σ g·(x - mean) in two interleaved double accumulators each (element i of a
        # row goes to i % 2; fixed by the shape, as in the forward)
        sg = 0.0
        sg1 = 0.0
        sgx = 0.0
        sgx1 = 0.0
        if masked:
            for n in range(N):
                i = 0
                while i + 2 <= HW:
                    g = _masked(grad_output[n, c, i], output[n, c, i])
                    g1 = _masked(grad_output[n, c, i + 1], output[n, c, i + 1])
                    if has_grad_residual:
                        grad_residual[n, c, i] = <floating>g
                        grad_residual[n, c, i + 1] = <floating>g1
                    sg = sg + g
                    sgx = sgx + g * (x[n, c, i] - m)
                    sg1 = sg1 + g1
                    sgx1 = sgx1 + g1 * (x[n, c, i + 1] - m)
                    i = i + 2
                if i < HW:
                    g = _masked(grad_output[n, c, i], output[n, c, i])
                    if has_grad_residual:
                        grad_residual[n, c, i] = <floating>g
                    sg = sg + g
                    sgx = sgx + g * (x[n, c, i] - m)
        else:
            for n in range(N):
                i = 0
                while i + 2 <= HW:
                    g = grad_output[n, c, i]
                    g1 = grad_output[n, c, i + 1]
                    sg = sg + g
                    sgx = sgx + g * (x[n, c, i] - m)
                    sg1 = sg1 + g1
                    sgx1 = sgx1 + g1 * (x[n, c, i + 1] - m)
                    i = i + 2
                if i < HW:
                    g = grad_output[n, c, i]
                    sg = sg + g
                    sgx = sgx + g * (x[n, c, i] - m)
        sg = sg + sg1
        sgx = (sgx + sgx1) * istd
        grad_bias[c] = sg
        grad_weight[c] = sgx
        scale = weight[c] * istd
        if training:
            mean_g = sg / count
            mean_gx = sgx / count
            if masked:
                for n in range(N):
                    for i in range(HW):
                        xhat = (x[n, c, i] - m) * istd
                        g = _masked(grad_output[n, c, i], output[n, c, i])
                        grad_input[n, c, i] = <floating>(scale * (g - mean_g - xhat * mean_gx))
            else:
                for n in range(N):
                    for i in range(HW):
                        xhat = (x[n, c, i] - m) * istd
                        grad_input[n, c, i] = <floating>(
                            scale * (grad_output[n, c, i] - mean_g - xhat * mean_gx))
        elif masked:
            for n in range(N):
                for i in range(HW):
                    g = _masked(grad_output[n, c, i], output[n, c, i])
                    grad_input[n, c, i] = <floating>(scale * g)
        else:
            for n in range(N):
                for i in range(HW):
                    grad_input[n, c, i] = <floating>(scale * grad_output[n, c, i])


def relu_backward(const floating[::1] x, const floating[::1] grad_output,
                  floating[::1] grad_input, int num_threads):
    """grad_input = grad_output where x > 0, else 0 (flat arrays of one size)."""
    cdef Py_ssize_t i, size = x.shape[0]
    for i in prange(size, schedule="static", nogil=True, num_threads=num_threads):
        grad_input[i] = <floating>_masked(grad_output[i], x[i])
