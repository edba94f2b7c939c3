"""Argument checks shared by the public ops: clear errors that name the argument.

Policy (docs/robustness.md): wrong types/dtypes raise ``TypeError``, wrong shapes or values
raise ``ValueError``; each message names the argument and shows what was expected and what was
received.  Arrays are never cast between dtypes (float32/float64 only, one dtype per call);
non-contiguous, negatively strided, Fortran-ordered, read-only and non-native-byte-order views
are accepted and copied to a native C-contiguous array (never mis-read).  Zero-size batches
(N = 0) are valid and give empty results; NaN/Inf values are not checked and propagate as in
numpy.
"""
import math
import numbers

import numpy as np

from .geometry import Conv2dGeometry

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The compiled kernels index with C ``int``: geometry values must fit in it.
INT_MAX = 2**31 - 1


def as_pair(value, name, minimum, maximum=INT_MAX):
    """Normalise an int or a pair of ints to ``(a, b)``, each in ``[minimum, maximum]``."""
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
        if v > maximum:
            raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
        out.append(int(v))
    return tuple(out)


PADDING_MODES = ("same", "valid")


def conv_padding(padding, kernel, stride, dilation=(1, 1), name="padding"):
    """The ``(ph, pw)`` pair of a sliding-window layer's ``padding``: an int, a pair of ints
    >= 0, or PyTorch's strings. ``"valid"`` is no padding; ``"same"`` keeps H×W (stride 1
    only, as in PyTorch) by padding ``dilation·(k − 1) / 2`` on each side. PyTorch pads an
    odd total (an even kernel) one more at the bottom/right; the kernels here pad
    symmetrically, so that case is refused with ValueError rather than silently shifted.
    ``kernel``, ``stride``, ``dilation``: int pairs, already checked."""
    if not isinstance(padding, str):
        return as_pair(padding, name, 0)
    if padding not in PADDING_MODES:
        raise ValueError(f"{name} must be an int, a pair of ints or one of {PADDING_MODES}, "
                         f"got {padding!r}")
    if padding == "valid":
        return (0, 0)
    if tuple(stride) != (1, 1):
        raise ValueError(f"{name}='same' needs stride 1 (as in PyTorch), got stride {stride}")
    total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
    if total[0] % 2 or total[1] % 2:
        raise ValueError(
            f"{name}='same' with kernel {tuple(kernel)} (dilation {tuple(dilation)}) needs "
            f"{total} padding rows/columns in all, an odd number that PyTorch splits "
            f"unevenly (the extra one at the bottom/right); addercore pads symmetrically "
            f"only: use an odd kernel, or pad the input yourself and pass padding=0")
    return (total[0] // 2, total[1] // 2)


def float_array(a, name, ndim=None, shape_hint=""):
    """Check ``a`` is a float32/float64 ndarray of rank ``ndim``; return it C-contiguous.

    Non-contiguous, negatively strided, read-only and byte-swapped views are accepted and
    copied (to native byte order), never mis-read.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    dtype = a.dtype.newbyteorder("=") if a.dtype.kind == "f" else a.dtype
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        hint = f" {shape_hint}" if shape_hint else ""
        raise ValueError(f"{name} must have {ndim} dimensions{hint}, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def same_dtype(**arrays):
    """All named arrays share one dtype (no silent up- or down-casting)."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name}: {dt}" for name, dt in dtypes.items())
        raise TypeError(f"arrays must share one dtype, got {listed}")


def expect_shape(a, name, expected):
    """``a.shape == expected`` or a ValueError showing both."""
    expected = tuple(expected)
    if a.shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {a.shape}")
    return a


def choice(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value


def real_scalar(value, name, low=None, high=None, low_open=False, finite=True):
    """A real Python/numpy number (not bool, not str), optionally finite and in a range;
    returned as float.  ``low_open`` makes the lower bound exclusive."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if finite and not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return v


def shape_tuple(shape, name, ndim, shape_hint=""):
    """A tuple of ``ndim`` non-negative ints (e.g. the ``x_shape`` argument of a backward)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {ndim} ints {shape_hint}, got {shape!r}") from None
    if len(dims) != ndim or any(
        isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral) or d < 0
        for d in dims
    ):
        raise ValueError(f"{name} must be a tuple of {ndim} non-negative ints {shape_hint}, "
                         f"got {shape!r}")
    return tuple(int(d) for d in dims)


def conv_geometry(x, weight, stride, padding, x_name="x", w_name="weight", dilation=(1, 1),
                  groups=1):
    """Check (N, Cin, H, W) against (Cout, Cin/groups, kh, kw) and the normalised ``stride`` /
    ``padding`` / ``dilation`` pairs and ``groups``; return the call's
    :class:`~addercore.ops.geometry.Conv2dGeometry` (``Ho``, ``Wo``, ``K``, ...), built here
    once and handed down to the kernels.

    N may be 0 (an empty batch); every other dimension of ``x`` and ``weight`` must be >= 1,
    ``groups`` must divide Cin and Cout, and the (dilated) kernel must fit in the padded input.
    """
    groups = group_count(groups)
    kh, kw = weight.shape[2:]
    if kh < 1 or kw < 1 or weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"{w_name} must have non-zero dimensions, got shape {weight.shape}")
    if x.shape[1] % groups or weight.shape[0] % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({x.shape[1]}) and the "
                         f"output channels ({weight.shape[0]}) ({x_name} shape {x.shape}, "
                         f"{w_name} shape {weight.shape})")
    if x.shape[1] != weight.shape[1] * groups:
        per = (f" per group (groups={groups}; {w_name} must be (Cout, Cin/groups, kh, kw))"
               if groups > 1 else "")
        raise ValueError(
            f"{x_name} has {x.shape[1]} channels but {w_name} expects {weight.shape[1]}{per} "
            f"({x_name} shape {x.shape}, {w_name} shape {weight.shape})"
        )
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(
            f"{x_name} must have non-zero height and width (only the batch N may be 0), "
            f"got shape {x.shape}"
        )
    geo = Conv2dGeometry.from_shapes(x.shape, weight.shape, stride, padding, dilation, groups)
    hp, wp = geo.hp, geo.wp
    if hp > INT_MAX or wp > INT_MAX:
        raise ValueError(f"padding {padding} makes the padded input {hp}x{wp} exceed {INT_MAX}")
    sh_, sw_ = geo.span
    if sh_ > hp or sw_ > wp:
        dil = f" with dilation {geo.dilation} (spans {sh_}x{sw_})" if geo.dilation != (1, 1) else ""
        raise ValueError(
            f"kernel {kh}x{kw}{dil} is larger than the padded input {hp}x{wp} "
            f"({x_name} shape {x.shape}, padding {padding})"
        )
    if geo.k > INT_MAX:
        raise ValueError(f"{w_name} filter length Cin*kh*kw exceeds {INT_MAX}: {weight.shape}")
    return geo


def group_count(groups, name="groups"):
    """``groups``: a positive int (not bool)."""
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(groups).__name__} {groups!r}")
    if groups < 1 or groups > INT_MAX:
        raise ValueError(f"{name} must be in [1, {INT_MAX}], got {groups!r}")
    return int(groups)
