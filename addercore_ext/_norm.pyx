# cython: language_level=3
"""BatchNorm2d and ReLU-backward kernels (float32/float64 via fused types).

Design
------
Every adder layer is followed by BatchNorm, so its cost is paid 19 times per ResNet-20 step;
numpy needs ~6 passes over the activation for the forward and ~8 for the backward, each with
a temporary. Here one channel is one unit of work: ``prange(C, schedule="static")`` gives each
thread whole channels, and inside a channel the sums over (n, h, w) run sequentially in a
fixed order, accumulated in double. So results do not depend on the thread count, and the
float32 statistics are more accurate than float32 pairwise sums (adder outputs are ~1e2-1e3
with small spread: the two-pass variance below avoids cancellation).

Passes over memory: forward (train) 3 reads + 1 write, backward (train) 2 reads of x and g + 1
write. No temporaries besides the (C,) statistics.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt

ctypedef fused floating:
    float
    double


def batch_norm_forward(const floating[:, :, ::1] x, const floating[::1] weight,
                       const floating[::1] bias, floating[:, :, ::1] y,
                       double[::1] mean, double[::1] var, double[::1] invstd,
                       bint training, double eps, int num_threads):
    """x, y: (N, C, H·W); weight, bias: (C,). training: computes ``mean``/``var`` (biased) of
    each channel and writes them; else reads ``mean`` and ``var`` (running estimates).
    Writes ``invstd = 1/sqrt(var + eps)`` and ``y = (x - mean)·invstd·weight + bias``."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2]
    cdef Py_ssize_t c, n, i
    cdef double s, d, m, scale, shift
    cdef double count = <double>(N * HW)
    for c in prange(C, schedule="static", nogil=True, num_threads=num_threads):
        if training:
            s = 0.0
            for n in range(N):
                for i in range(HW):
                    s = s + x[n, c, i]
            m = s / count
            s = 0.0
            for n in range(N):
                for i in range(HW):
                    d = x[n, c, i] - m
                    s = s + d * d
            mean[c] = m
            var[c] = s / count
        invstd[c] = 1.0 / sqrt(var[c] + eps)
        scale = invstd[c] * weight[c]
        shift = bias[c] - mean[c] * scale
        for n in range(N):
            for i in range(HW):
                y[n, c, i] = <floating>(x[n, c, i] * scale + shift)


def batch_norm_backward(const floating[:, :, ::1] x, const floating[::1] weight,
                        const floating[:, :, ::1] grad_output, const double[::1] mean,
                        const double[::1] invstd, floating[:, :, ::1] grad_input,
                        double[::1] grad_weight, double[::1] grad_bias, bint training,
                        int num_threads):
    """x, grad_output, grad_input: (N, C, H·W). Writes grad_input and the per-channel
    ``grad_weight = Σ g·xhat`` and ``grad_bias = Σ g`` (C,)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2]
    cdef Py_ssize_t c, n, i
    cdef double sg, sgx, g, xhat, m, istd, scale, mean_g, mean_gx
    cdef double count = <double>(N * HW)
    for c in prange(C, schedule="static", nogil=True, num_threads=num_threads):
        m = mean[c]
        istd = invstd[c]
        sg = 0.0
        sgx = 0.0
        for n in range(N):
            for i in range(HW):
                g = grad_output[n, c, i]
                sg = sg + g
                sgx = sgx + g * (x[n, c, i] - m)
        sgx = sgx * istd
        grad_bias[c] = sg
        grad_weight[c] = sgx
        scale = weight[c] * istd
        if training:
            mean_g = sg / count
            mean_gx = sgx / count
            for n in range(N):
                for i in range(HW):
                    xhat = (x[n, c, i] - m) * istd
                    grad_input[n, c, i] = <floating>(
                        scale * (grad_output[n, c, i] - mean_g - xhat * mean_gx))
        else:
            for n in range(N):
                for i in range(HW):
                    grad_input[n, c, i] = <floating>(scale * grad_output[n, c, i])


def relu_backward(const floating[::1] x, const floating[::1] grad_output,
                  floating[::1] grad_input, int num_threads):
    """grad_input = grad_output where x > 0, else 0 (flat arrays of one size)."""
    cdef Py_ssize_t i, size = x.shape[0]
    for i in prange(size, schedule="static", nogil=True, num_threads=num_threads):
        grad_input[i] = grad_output[i] if x[i] > 0 else 0
