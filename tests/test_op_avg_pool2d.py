"""avg_pool2d and adaptive_avg_pool2d: central finite differences, the global-average
identity, and PyTorch's adaptive windows against a loop written from their definition.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import math

import numpy as np
import pytest

from addercore import ops
from addercore.gradcheck import gradcheck

RNG = np.random.default_rng(1234)


def test_avg_pool_gradient_finite_differences_and_global_mean():
    x = RNG.standard_normal((2, 3, 6, 4))
    g = RNG.standard_normal((2, 3, 3, 2))
    gi = ops.avg_pool2d_backward(x.shape, g, 2)
    gradcheck(lambda: np.sum(ops.avg_pool2d_forward(x, 2) * g), [(gi, x)])
    np.testing.assert_allclose(ops.avg_pool2d_forward(x, (6, 4))[:, :, 0, 0], x.mean(axis=(2, 3)))


def test_avg_pool_matches_direct_loop_with_stride():
    x = RNG.standard_normal((1, 2, 5, 6))
    y = ops.avg_pool2d_forward(x, (2, 3), stride=(3, 1))
    expected = np.zeros((1, 2, 2, 4))
    for c, i, j in np.ndindex(2, 2, 4):
        expected[0, c, i, j] = x[0, c, 3 * i:3 * i + 2, j:j + 3].mean()
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def loop_adaptive_avg_pool(x, out_h, out_w):
    """PyTorch's adaptive pooling written from its definition: output (i, j) averages rows
    floor(i·H/Ho) .. ceil((i+1)·H/Ho) - 1 and the same for the columns, in float64."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w))
    for i, j in np.ndindex(out_h, out_w):
        hs, he = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        ws, we = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
        for a, b in np.ndindex(n, c):
            y[a, b, i, j] = sum(float(x[a, b, r, s]) for r in range(hs, he)
                                for s in range(ws, we)) / ((he - hs) * (we - ws))
    return y


@pytest.mark.parametrize("hw, out", [((5, 7), (3, 2)), ((7, 7), (1, 1)), ((4, 6), (4, 6)),
                                     ((3, 2), (5, 4)), ((8, 8), (2, 4))])
def test_adaptive_avg_pool_matches_loop(hw, out):
    x = RNG.standard_normal((2, 3) + hw)
    np.testing.assert_allclose(ops.adaptive_avg_pool2d_forward(x, out),
                               loop_adaptive_avg_pool(x, *out), rtol=1e-13, atol=1e-15)
    x32 = x.astype(np.float32)
    y32 = ops.adaptive_avg_pool2d_forward(x32, out)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, loop_adaptive_avg_pool(x32, *out), rtol=1e-6, atol=1e-6)


def test_adaptive_avg_pool_hand_computed_and_global():
    # H = 5 into 3 rows: windows [0, 2), [1, 4), [3, 5) (they overlap, as in PyTorch)
    x = np.arange(5.0).reshape(1, 1, 5, 1)
    np.testing.assert_array_equal(ops.adaptive_avg_pool2d_forward(x, (3, 1)).ravel(),
                                  [0.5, 2.0, 3.5])
    x = RNG.standard_normal((2, 4, 7, 9))
    np.testing.assert_allclose(ops.adaptive_avg_pool2d_forward(x, 1)[:, :, 0, 0],
                               x.mean(axis=(2, 3)), rtol=1e-13)
    # divisible sizes: the plain average pooling with kernel = stride = H/Ho
    x = RNG.standard_normal((1, 2, 8, 6))
    np.testing.assert_allclose(ops.adaptive_avg_pool2d_forward(x, (4, 2)),
                               ops.avg_pool2d_forward(x, (2, 3)), rtol=1e-13)


@pytest.mark.parametrize("hw, out", [((5, 7), (3, 2)), ((3, 2), (5, 4)), ((6, 6), 1)])
def test_adaptive_avg_pool_gradient_finite_differences(hw, out):
    x = RNG.standard_normal((2, 2) + hw)
    y = ops.adaptive_avg_pool2d_forward(x, out)
    g = RNG.standard_normal(y.shape)
    gi = ops.adaptive_avg_pool2d_backward(x.shape, g)
    gradcheck(lambda: np.sum(ops.adaptive_avg_pool2d_forward(x, out) * g), [(gi, x)])


def test_adaptive_avg_pool_errors():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"output_size must be >= 1, got 0"):
        ops.adaptive_avg_pool2d_forward(x, 0)
    with pytest.raises(ValueError, match=r"x must have 4 dimensions"):
        ops.adaptive_avg_pool2d_forward(np.zeros((2, 4, 4)), 1)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(1, 2, 1, 1\)"):
        ops.adaptive_avg_pool2d_backward((1, 2, 4, 4), np.zeros((1, 3, 1, 1)))


def test_adaptive_avg_pool_module_and_autograd():
    from addercore import Tensor, functional as F, nn

    pool = nn.AdaptiveAvgPool2d((3, 2))
    x = Tensor(RNG.standard_normal((2, 3, 5, 7)), requires_grad=True)
    y = pool(x)
    np.testing.assert_allclose(y.data, loop_adaptive_avg_pool(x.data, 3, 2), rtol=1e-13)
    g = RNG.standard_normal(y.shape)
    F.sum(F.mul(y, g)).backward()
    np.testing.assert_array_equal(x.grad, ops.adaptive_avg_pool2d_backward(x.data.shape, g))
    assert "output_size=(3, 2)" in repr(pool)


def test_avg_pool_backward_tiling_windows_exact_per_element():
    # Windows that tile the plane (ResNet's global 8x8 pool, stride = kernel) take a one-pass
    # broadcast path; every input element gets exactly its window's share, computed as 0 + share
    # (so a -0.0 share gives +0.0, as the tap loop does), and the overlapping/gapped geometries
    # keep the loop: compare both with a per-element Python loop.
    for dtype in (np.float32, np.float64):
        for shape, kernel, stride in (((3, 4, 8, 8), (8, 8), None), ((2, 3, 6, 9), (2, 3), None),
                                      ((2, 3, 6, 9), (2, 3), (2, 3)), ((2, 2, 7, 9), (2, 3), None),
                                      ((2, 2, 6, 6), (3, 3), (1, 2)),
                                      ((3, 4, 8, 8), (8, 8), (1, 1)), ((2, 2, 8, 6), (4, 6), (4, 1))):
            kh, kw = kernel
            sh, sw = stride or kernel
            ho, wo = (shape[2] - kh) // sh + 1, (shape[3] - kw) // sw + 1
            g = RNG.standard_normal(shape[:2] + (ho, wo)).astype(dtype)
            g.flat[::3] = -0.0
            gi = ops.avg_pool2d_backward(shape, g, kernel, stride)
            expected = np.zeros(shape, dtype=dtype)
            for n, c, i, j in np.ndindex(*g.shape):
                share = g[n, c, i, j] / dtype(kh * kw)
                expected[n, c, sh * i:sh * i + kh, sw * j:sw * j + kw] += share
            assert gi.dtype == dtype
            if sh >= kh and sw >= kw:  # one share per element: exact, whatever the order
                assert gi.tobytes() == expected.tobytes(), (shape, kernel, stride, dtype)
                assert not np.signbit(gi[gi == 0]).any()
            else:  # overlapping windows: sums of several shares, in another order
                np.testing.assert_allclose(gi, expected, rtol=1e-5 if dtype == np.float32
                                           else 1e-12, atol=1e-6)
