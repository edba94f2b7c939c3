"""relu: central finite differences away from the kink, and the compiled backward
against the reference (bit-exact: a selection).

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import numpy as np
import pytest

from addercore import ops
from addercore.gradcheck import gradcheck
from optest import check_compiled_matches_reference, needs_cython

RNG = np.random.default_rng(1234)


def test_relu_gradient_finite_differences():
    xr = RNG.standard_normal((3, 4)) + 0.01
    gr = RNG.standard_normal((3, 4))
    gradcheck(lambda: np.sum(ops.relu_forward(xr) * gr), [(ops.relu_backward(xr, gr), xr)])



def test_relu_values():
    x = np.array([-2.0, -0.0, 0.0, 0.5, np.inf, -np.inf])
    np.testing.assert_array_equal(ops.relu_forward(x), [0, 0, 0, 0.5, np.inf, 0])
    np.testing.assert_array_equal(ops.relu_backward(x, np.ones(6)), [0, 0, 0, 1, 1, 0])


@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_matches_reference(dtype):
    x = RNG.standard_normal((3, 4, 5, 5)).astype(dtype)
    x[0, 0, 0, :2] = 0.0
    check_compiled_matches_reference("relu_backward", x, RNG.standard_normal(x.shape).astype(dtype))
