"""cross_entropy: the value against the softmax formula, central finite differences,
stability for large logits.

Runs on whichever backend is active (``ADDERCORE_BACKEND=numpy`` forces the reference); the
compiled-vs-reference checks follow the op table's promise (tests/optest.py). Argument
validation of every op: tests/test_validation.py.
"""
import numpy as np

from addercore import ops
from addercore.gradcheck import gradcheck

RNG = np.random.default_rng(1234)


def test_cross_entropy_value_and_gradient():
    logits = RNG.standard_normal((4, 5))
    targets = np.array([0, 3, 4, 1])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(4), targets]))
    np.testing.assert_allclose(ops.cross_entropy_forward(logits, targets), expected, rtol=1e-12)
    grad = ops.cross_entropy_backward(logits, targets)
    gradcheck(lambda: float(ops.cross_entropy_forward(logits, targets)), [(grad, logits)])
    # stable for huge logits: no overflow, loss stays finite
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert np.isfinite(ops.cross_entropy_forward(big, np.array([0, 0])))


