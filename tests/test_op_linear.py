"""linear: central finite differences and the value against numpy.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import numpy as np

from addercore import ops
from addercore.gradcheck import gradcheck

RNG = np.random.default_rng(1234)


def test_linear_gradients_finite_differences():
    xl = RNG.standard_normal((3, 5))
    wl = RNG.standard_normal((2, 5))
    bl = RNG.standard_normal(2)
    gl = RNG.standard_normal((3, 2))
    gix, gw, gb = ops.linear_backward(xl, wl, gl)
    gradcheck(lambda: np.sum(ops.linear_forward(xl, wl, bl) * gl), [(gix, xl), (gw, wl), (gb, bl)])




def test_linear_value():
    x, w, b = RNG.standard_normal((3, 5)), RNG.standard_normal((2, 5)), RNG.standard_normal(2)
    expected = np.array([[sum(x[n, i] * w[o, i] for i in range(5)) + b[o] for o in range(2)]
                         for n in range(3)])
    np.testing.assert_allclose(ops.linear_forward(x, w, b), expected, rtol=1e-12)
    np.testing.assert_allclose(ops.linear_forward(x, w), expected - b, rtol=1e-12)
