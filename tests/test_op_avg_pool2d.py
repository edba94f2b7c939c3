"""avg_pool2d: central finite differences and the global-average identity.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import numpy as np

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
