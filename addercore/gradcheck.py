"""Central finite differences: the independent reference every analytic gradient is tested
against (the ops' backward functions, the autograd of :mod:`addercore.functional`, modules).

Use float64 arrays: with ``eps = 1e-6`` the truncation error is ~eps² and the rounding error
~1e-16/eps, both far below the tolerances the tests state.
"""
import numpy as np

__all__ = ["numeric_grad", "gradcheck"]


def numeric_grad(f, a, eps=1e-6):
    """Central differences ``(f(a + eps·e_i) − f(a − eps·e_i)) / (2·eps)`` of the scalar
    ``f()`` with respect to every element of the array ``a``.

    ``a`` is modified **in place** (one element at a time) and restored exactly, so ``f``
    reads it through a closure; returns an array of ``a``'s shape and dtype."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        raise TypeError(f"a must be a float numpy.ndarray (modified in place), got "
                        f"{type(a).__name__}")
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


def gradcheck(f, pairs, rtol=1e-5, atol=1e-7, eps=1e-6):
    """Assert that each ``(analytic, array)`` of ``pairs`` matches :func:`numeric_grad` of the
    scalar ``f()`` with respect to ``array`` (``numpy.testing.assert_allclose`` with ``rtol``
    and ``atol``; AssertionError names the pair's index)."""
    for index, (analytic, array) in enumerate(pairs):
        np.testing.assert_allclose(analytic, numeric_grad(f, array, eps), rtol=rtol, atol=atol,
                                   err_msg=f"gradient #{index} (shape {np.shape(array)})")
