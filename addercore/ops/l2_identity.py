"""The ℓ2 adder forward through the supplement's Eq. 15: ``2·(X∗F) − ΣXp² − ΣF²``.

The ℓ2 adder layer (method §2.2, supplement Eq. 14) is
``Y[n,t,h,w] = −Σ_{c,i,j} (Xp[n,c,h·s+i,w·s+j] − F[t,c,i,j])²``. Expanding the square gives
(supplement Eq. 15)::

    Y = 2·(X∗F) − S_X − S_F,   S_X[n,h,w] = Σ_{c,i,j} Xp[n,c,h·s+i,w·s+j]²,
                                S_F[t]     = Σ_{c,i,j} F[t,c,i,j]²

so the layer costs one convolution (a GEMM) plus two cheap reductions. Padding needs no special
case: padded taps are zeros in ``Xp``, so they add 0 to ``X∗F`` and to ``S_X`` while their
``F²`` is still in ``S_F`` — exactly the direct sum, where a padded tap contributes
``(0 − F)² = F²``.

``S_X`` is a convolution of the channel sum ``Σ_c X²`` (shape (N, 1, H, W)) with a
(1, 1, kh, kw) filter of ones: ``Cout·Cin`` times cheaper than the main convolution.

Rounding: the identity subtracts terms of size ``ΣXp² + ΣF²`` to get ``Σ(Xp − F)²``, so its
absolute error is about ``K·ε·(ΣXp² + ΣF² + 2Σ|Xp·F|)`` per output (K = Cin·kh·kw taps, ε the
dtype's unit roundoff) — relative to the result it grows when X is close to F (cancellation).
The direct kernel sums non-negative terms and has no cancellation; it stays the reference and
the default of the layer. :func:`l2_rounding_bound` gives the bound the tests use.

This module only adds a function; selecting it inside :func:`addercore.ops.adder2d_forward`
(or the layer) is left to the op table.
"""
import numpy as np

from ._validate import as_pair, choice, conv_geometry, float_array, same_dtype

__all__ = ["adder2d_l2_forward", "l2_forward_via_conv", "l2_rounding_bound", "METHODS"]

METHODS = ("direct", "conv")


def _ops():
    # Imported on call: the ops package may import this module to register it (no cycle).
    from .. import ops
    return ops


def l2_forward_via_conv(x, weight, stride, padding, conv=None):
    """Eq. 15 on validated arrays: ``2·conv(x, F) − conv(Σ_c x², 1) − ΣF²``.

    x: (N, Cin, H, W); weight: (Cout, Cin, kh, kw), C-contiguous, same float dtype;
    stride, padding: pairs of ints. ``conv`` is the convolution to use,
    ``conv(x, w, stride, padding) -> (N, Cout, Ho, Wo)`` (default
    :func:`addercore.ops.conv2d_forward`, the compiled one when the Cython backend is active).
    Returns y: (N, Cout, Ho, Wo) in the inputs' dtype (every step stays in that dtype).
    """
    if conv is None:
        conv = _ops().conv2d_forward
    kh, kw = weight.shape[2:]
    y = conv(x, weight, stride, padding)                       # X∗F
    y *= 2                                                     # exact (power of two)
    sq = np.einsum("nchw,nchw->nhw", x, x)[:, None]            # Σ_c X², (N, 1, H, W)
    s_x = conv(np.ascontiguousarray(sq), np.ones((1, 1, kh, kw), dtype=x.dtype), stride, padding)
    y -= s_x                                                   # (N, 1, Ho, Wo) broadcast
    s_f = np.einsum("tcij,tcij->t", weight, weight)            # ΣF² per filter, (Cout,)
    y -= s_f[None, :, None, None]
    return y


def adder2d_l2_forward(x, weight, stride=1, padding=0, method="conv"):
    """ℓ2 adder forward ``y = −Σ(Xp_patch − F)²`` (method §2.2 and §2.4, supplement Eq. 14-15).

    x: (N, Cin, H, W); weight: (Cout, Cin, kh, kw); both float32 or both float64.
    stride, padding: int or pair (h, w). method: ``"direct"`` — the direct ℓ2 kernel
    (:func:`addercore.ops.adder2d_forward` with ``norm="l2"``, canonical summation order) —
    or ``"conv"`` — Eq. 15 through the convolution (:func:`l2_forward_via_conv`), equal within
    rounding (see the module docstring).
    Returns y: (N, Cout, Ho, Wo), the inputs' dtype.
    Raises TypeError (non-array, non-float or mixed dtypes, non-int stride/padding) and
    ValueError (bad ranks, channel mismatch, kernel larger than the padded input, unknown
    method), naming the argument.
    """
    choice(method, "method", METHODS)
    if method == "direct":
        return _ops().adder2d_forward(x, weight, stride, padding, norm="l2")
    x = float_array(x, "x", 4, "(N, Cin, H, W)")
    weight = float_array(weight, "weight", 4, "(Cout, Cin, kh, kw)")
    same_dtype(x=x, weight=weight)
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    conv_geometry(x, weight, stride, padding)
    return l2_forward_via_conv(x, weight, stride, padding)


def l2_rounding_bound(x, weight, stride=1, padding=0):
    """Per-output bound on ``|Eq. 15 − direct|`` in the inputs' dtype, float64 array
    (N, Cout, Ho, Wo): ``2·(K + 2)·ε·(ΣXp² + ΣF² + 2·Σ|Xp|·|F|)`` with K = Cin·kh·kw and ε the
    unit roundoff of x's dtype.

    Why: each of the three sums of K products (conv, ΣXp², the direct ΣD²) has a recursive
    summation error below ``K·ε·Σ|terms|`` (first order, Higham §3.1), plus a few roundings
    for the final combination; all terms are bounded by ``ΣXp² + ΣF² + 2Σ|Xp·F|``. The factor
    2 covers both methods' errors. Computed in float64 with the reference convolution.
    """
    ops = _ops()
    x64 = np.asarray(x, dtype=np.float64)
    w64 = np.asarray(weight, dtype=np.float64)
    stride = as_pair(stride, "stride", 1)
    padding = as_pair(padding, "padding", 0)
    k = w64[0].size
    eps = np.finfo(np.asarray(x).dtype).eps / 2
    conv = ops.reference.conv2d_forward
    kh, kw = w64.shape[2:]
    s_x = conv((x64 * x64).sum(1, keepdims=True), np.ones((1, 1, kh, kw)), stride, padding)
    s_f = (w64 * w64).sum(axis=(1, 2, 3))[None, :, None, None]
    cross = conv(np.abs(x64), np.abs(w64), stride, padding)
    return 2 * (k + 2) * eps * (s_x + s_f + 2 * cross)
