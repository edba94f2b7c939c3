"""Shared helpers of the per-op test modules (``tests/test_op_<family>.py``): compiled vs
reference as the op table promises it. Gradients are checked with the library's
:mod:`addercore.gradcheck`."""
import numpy as np
import pytest

import addercore
from addercore._backend import use_backend
from addercore.ops import table

needs_cython = pytest.mark.skipif(addercore.backend() != "cython",
                                  reason="compiled extension addercore_ext not built/active")

#: Within-rounding agreement of a compiled kernel with the reference, per dtype.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


def check_compiled_matches_reference(name, *args, **kwargs):
    """Run public op ``name`` on both backends (fresh copies of array arguments, so in-place
    updates compare too) and check the agreement its table entry promises."""
    entry = table.OPS[name]
    assert entry.compiled is not None, f"{name} has no compiled kernel"

    def run(backend):
        a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
        kw = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        with use_backend(backend):
            return _flat(entry.public(*a, **kw)) + [x for x in a if isinstance(x, np.ndarray)]

    ref, got = run("numpy"), run("cython")
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        if r is None:
            assert g is None
            continue
        assert g.shape == r.shape and g.dtype == r.dtype, name
        if entry.agreement == "bit-exact":
            np.testing.assert_array_equal(g, r, err_msg=name)
        else:
            rtol = RTOL[np.dtype(r.dtype)]
            scale = max(float(np.max(np.abs(r))), 1.0) if r.size else 1.0
            np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * scale, err_msg=name)
