"""Argument checks shared by the public ops: clear errors that name the argument."""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_pair(value, name, minimum):
    """Normalise an int or a pair of ints to ``(a, b)``, each >= ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    out = []
    for v in pair:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        out.append(int(v))
    return tuple(out)


def float_array(a, name, ndim=None, shape_hint=""):
    """Check ``a`` is a float32/float64 ndarray of rank ``ndim``; return it C-contiguous.

    Non-contiguous and negatively strided views are accepted and copied, never mis-read.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        hint = f" {shape_hint}" if shape_hint else ""
        raise ValueError(f"{name} must have {ndim} dimensions{hint}, got shape {a.shape}")
    return np.ascontiguousarray(a)


def same_dtype(**arrays):
    """All named arrays share one dtype (no silent up- or down-casting)."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name}: {dt}" for name, dt in dtypes.items())
        raise TypeError(f"arrays must share one dtype, got {listed}")


def choice(value, name, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value


def conv_geometry(x, weight, stride, padding, x_name="x", w_name="weight"):
    """Check (N, Cin, H, W) against (Cout, Cin, kh, kw); return ``(Ho, Wo)``."""
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{x_name} has {x.shape[1]} channels but {w_name} expects {weight.shape[1]} "
            f"({x_name} shape {x.shape}, {w_name} shape {weight.shape})"
        )
    kh, kw = weight.shape[2:]
    if kh < 1 or kw < 1 or weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"{w_name} must have non-zero dimensions, got shape {weight.shape}")
    hp = x.shape[2] + 2 * padding[0]
    wp = x.shape[3] + 2 * padding[1]
    if kh > hp or kw > wp:
        raise ValueError(
            f"kernel {kh}x{kw} is larger than the padded input {hp}x{wp} "
            f"({x_name} shape {x.shape}, padding {padding})"
        )
    return (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
