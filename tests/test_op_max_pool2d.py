"""max_pool2d: the reference against a direct loop (values, indices, tie rule), gradient
routing, all -inf windows, validation.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import numpy as np
import pytest

from addercore import ops

RNG = np.random.default_rng(1234)


def test_max_pool2d_matches_direct_loop_and_routes_gradient():
    x = RNG.standard_normal((2, 3, 6, 7))
    x[0, 1, 2, 3] = x[0, 1, 2, 4] = 9.0  # a tie: the first in row-major window order wins
    y, idx = ops.max_pool2d_forward(x, (3, 2), stride=(2, 2), padding=(1, 1))
    assert y.shape == idx.shape == (2, 3, 3, 4) and idx.dtype == np.int64
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for n, c, i, j in np.ndindex(*y.shape):
        window = xp[n, c, 2 * i:2 * i + 3, 2 * j:2 * j + 2]
        assert y[n, c, i, j] == window.max()
        r, q = np.unravel_index(np.argmax(window), window.shape)
        assert idx[n, c, i, j] == (2 * i + r - 1) * 7 + (2 * j + q - 1)
    g = RNG.standard_normal(y.shape)
    gx = ops.max_pool2d_backward(x.shape, g, idx)
    expected = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*y.shape):
        expected[n, c].flat[idx[n, c, i, j]] += g[n, c, i, j]
    np.testing.assert_allclose(gx, expected, rtol=1e-15)
    assert gx[0, 1, 2, 4] == 0.0  # the second of the tied maxima gets nothing


def test_max_pool2d_all_minus_inf_window_and_validation():
    x = np.full((1, 1, 2, 2), -np.inf)
    y, idx = ops.max_pool2d_forward(x, 2, stride=1, padding=1)
    assert np.all(y == -np.inf)
    assert idx.min() >= -1 and idx.max() < 4
    gx = ops.max_pool2d_backward(x.shape, np.ones_like(y), idx)
    assert gx.shape == x.shape and np.isfinite(gx).all()
    with pytest.raises(ValueError, match="padding"):
        ops.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match="x must"):
        ops.max_pool2d_forward(np.zeros((4, 4)), 2)
    with pytest.raises(TypeError, match="indices"):
        ops.max_pool2d_backward((1, 1, 4, 4), np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="indices"):
        ops.max_pool2d_backward((1, 1, 4, 4), np.zeros((1, 1, 2, 2)),
                                np.full((1, 1, 2, 2), 16, dtype=np.int64))
