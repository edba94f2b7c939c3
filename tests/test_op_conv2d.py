"""conv2d (multiplication convolution, cross-correlation): the reference against a direct
loop, central finite differences, and the compiled kernels against the reference.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import itertools

import numpy as np
import pytest

from addercore import ops
from addercore.gradcheck import gradcheck
from optest import check_compiled_matches_reference, needs_cython

RNG = np.random.default_rng(1234)


def padded(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def test_conv2d_gradients_finite_differences():
    x = RNG.standard_normal((2, 3, 5, 4))
    w = RNG.standard_normal((2, 3, 3, 2))
    stride, padding = (2, 1), (1, 0)
    g = RNG.standard_normal(ops.conv2d_forward(x, w, stride, padding).shape)

    def f():
        return np.sum(ops.conv2d_forward(x, w, stride, padding) * g)

    gi, gw = ops.conv2d_backward(x, w, g, stride, padding)
    gradcheck(f, [(gi, x), (gw, w)])


def test_conv2d_matches_direct_loop():
    x = RNG.standard_normal((1, 2, 5, 5))
    w = RNG.standard_normal((3, 2, 3, 3))
    xp = padded(x, 1, 1)
    expected = np.zeros((1, 3, 3, 3))
    for t, h, v in itertools.product(range(3), range(3), range(3)):
        expected[0, t, h, v] = np.sum(xp[0, :, 2 * h:2 * h + 3, 2 * v:2 * v + 3] * w[t])
    np.testing.assert_allclose(ops.conv2d_forward(x, w, 2, 1), expected, rtol=1e-12)
    bias = RNG.standard_normal(3)
    np.testing.assert_allclose(ops.conv2d_forward(x, w, 2, 1, bias=bias),
                               expected + bias[None, :, None, None], rtol=1e-12)



@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding", [(1, 1), ((2, 1), (1, 0)), (3, 2)])
def test_compiled_matches_reference(dtype, stride, padding):
    x = RNG.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = RNG.standard_normal((4, 3, 3, 2)).astype(dtype)
    bias = RNG.standard_normal(4).astype(dtype)
    g = RNG.standard_normal(ops.conv2d_forward(x, w, stride, padding).shape).astype(dtype)
    check_compiled_matches_reference("conv2d_forward", x, w, stride, padding, bias)
    check_compiled_matches_reference("conv2d_backward", x, w, g, stride, padding)
