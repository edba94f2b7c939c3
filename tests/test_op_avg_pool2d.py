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
