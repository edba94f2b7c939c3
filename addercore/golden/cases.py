"""The golden case list: every case's name, op kind, dtype, seed, parameters and tolerance.

A case is a dict (``name``, ``op``, ``dtype``, ``seed``, ``params``, ``tolerance``, ``small``);
the manifest stores it as is. Adding a case for an existing kind is one line in
:func:`cases`; a new kind also needs an entry in :mod:`addercore.golden.kinds`.
"""
import fnmatch

from ..ops.geometry import pair as _pair
from ..ops.options import default_input_grad

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SUMMATION_ORDER", "cases", "select_cases"]

FORMAT_NAME = "addercore-golden"
FORMAT_VERSION = 1

# The contract is docs/method.md §3. This string restates it for porters who have only the
# golden files: it is written into every manifest.json, so changing it changes the committed set.
SUMMATION_ORDER = (
    "adder2d forward: each output element y[n,t,h,w] is one accumulator in the arrays' dtype, "
    "starting at 0, to which |Xp[n,c,h*sh+i,w*sw+j] - F[t,c,i,j]| (l1) or its square (l2) is "
    "added for c ascending, then i ascending, then j ascending (padded taps read 0 and "
    "contribute |F| or F^2); the output is the negated accumulator. Every other reduction "
    "(backward sums, convolution, BatchNorm, whole networks) is compared within the stated "
    "tolerance, not bit for bit."
)

# --------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------
_TOL_OP = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1e-4, "atol": 1e-5}}
_TOL_NET = {"rtol": 1e-8, "atol": 1e-12}
_TOL_NET_F32 = {"rtol": 1e-3, "atol": 1e-5}


def _tol(dtype, exact=(), **override):
    tol = dict(_TOL_OP[dtype])
    tol.update(override)
    tol["exact"] = sorted(exact)
    return tol


# --------------------------------------------------------------------------------------------
# The case list
# --------------------------------------------------------------------------------------------
def _window(params, dilation, groups):
    """Add ``dilation``/``groups`` to a sliding-window case's params when not the defaults
    (absent means (1, 1) and 1: the cases made before they existed stay byte-identical)."""
    if _pair(dilation) != (1, 1):
        params["dilation"] = list(_pair(dilation))
    if groups != 1:
        params["groups"] = groups
    return params


def _adder(name, dtype, x_shape, w_shape, stride, padding, norm="l1", filter_grad="full",
           input_grad=None, values="normal", seed=0, small=True, dilation=1, groups=1):
    if input_grad is None:
        input_grad = default_input_grad(norm)
    params = {"x_shape": list(x_shape), "weight_shape": list(w_shape),
              "stride": list(_pair(stride)), "padding": list(_pair(padding)), "norm": norm,
              "filter_grad": filter_grad, "input_grad": input_grad, "eta": 0.2,
              "values": values}
    _window(params, dilation, groups)
    # Small-integer inputs make every sum exact in any order.
    exact = ["output"] if norm == "l1" else []
    if values == "ties":
        exact = ["output", "grad_input", "grad_weight"]
    return {"name": name, "op": "adder2d", "dtype": dtype, "seed": seed, "params": params,
            "tolerance": _tol(dtype, exact), "small": small}


def _conv(name, dtype, x_shape, w_shape, stride, padding, bias, seed, small=True, dilation=1,
          groups=1):
    params = {"x_shape": list(x_shape), "weight_shape": list(w_shape),
              "stride": list(_pair(stride)), "padding": list(_pair(padding)), "bias": bias}
    _window(params, dilation, groups)
    return {"name": name, "op": "conv2d", "dtype": dtype, "seed": seed, "params": params,
            "tolerance": _tol(dtype), "small": small}


def _bn(name, dtype, x_shape, training, seed, momentum=0.1, eps=1e-5, offset=0.0, scale=1.0,
        small=True):
    params = {"x_shape": list(x_shape), "training": training, "momentum": momentum, "eps": eps,
              "x_offset": offset, "x_scale": scale}
    return {"name": name, "op": "batch_norm2d", "dtype": dtype, "seed": seed, "params": params,
            "tolerance": _tol(dtype), "small": small}


def _net(name, layers, widths, kind, seed, batch=4, small=True, dtype="float64", step=True,
         tol=None):
    params = {"arch": "resnet_cifar", "layers": list(layers), "widths": list(widths),
              "kind": kind, "norm": "l1", "sgd_step": step,
              "num_classes": 10, "batch": batch, "image_size": 32, "training": True,
              "loss": "cross_entropy_mean", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
              "nesterov": False, "eta": 0.2, "placement": "gradient",
              "bn_eps": 1e-5, "bn_momentum": 0.1}
    tol = dict(tol or _TOL_NET)
    tol["exact"] = []
    return {"name": name, "op": "resnet_cifar", "dtype": dtype, "seed": seed,
            "params": params, "tolerance": tol, "small": small}


def cases(small=False):
    """The case list: dicts with name, op, dtype, seed, params, tolerance (and ``small``).

    ``small=True`` keeps the cases of the committed set (every op-level case, whole networks
    as ResNet-8); the full set adds ResNet-20 and a few larger layers.
    """
    out = []
    s = iter(range(1000, 10000))
    # -- adder2d: norms x gradient rules -------------------------------------------------------
    for dt in ("float64", "float32"):
        t = "f64" if dt == "float64" else "f32"
        out += [
            _adder(f"adder2d_l1_full_hardtanh_k3s1p1_{t}", dt, (2, 3, 7, 9), (4, 3, 3, 3), 1, 1,
                   seed=next(s)),
            _adder(f"adder2d_l1_sign_sign_k3s2p0_{t}", dt, (2, 3, 9, 7), (4, 3, 3, 3), 2, 0,
                   filter_grad="sign", input_grad="sign", seed=next(s)),
            _adder(f"adder2d_l1_full_exact_k3s1p2_{t}", dt, (2, 2, 5, 6), (3, 2, 3, 3), 1, 2,
                   input_grad="exact", seed=next(s)),
            _adder(f"adder2d_l2_full_exact_k3s1p1_{t}", dt, (2, 3, 7, 9), (4, 3, 3, 3), 1, 1,
                   norm="l2", seed=next(s)),
            _adder(f"adder2d_l2_full_hardtanh_k5s3p2_{t}", dt, (2, 2, 11, 13), (3, 2, 5, 5), 3,
                   2, norm="l2", input_grad="hardtanh", seed=next(s)),
            _adder(f"adder2d_l2_sign_sign_k1s1p0_{t}", dt, (2, 3, 5, 5), (4, 3, 1, 1), 1, 0,
                   norm="l2", filter_grad="sign", input_grad="sign", seed=next(s)),
            _adder(f"adder2d_l1_k1s2p0_downsample_{t}", dt, (2, 4, 8, 8), (6, 4, 1, 1), 2, 0,
                   seed=next(s)),
            _adder(f"adder2d_l1_k5s1p2_{t}", dt, (1, 2, 9, 9), (3, 2, 5, 5), 1, 2, seed=next(s)),
            _adder(f"adder2d_l1_k3x1_s12_p10_{t}", dt, (2, 3, 7, 8), (2, 3, 3, 1), (1, 2),
                   (1, 0), seed=next(s)),
            _adder(f"adder2d_l1_k2x5_s21_p02_{t}", dt, (1, 2, 6, 9), (3, 2, 2, 5), (2, 1),
                   (0, 2), seed=next(s)),
            _adder(f"adder2d_l1_k3s3p2_batch1_odd_{t}", dt, (1, 3, 11, 13), (5, 3, 3, 3), 3, 2,
                   seed=next(s)),
            _adder(f"adder2d_l2_k2x5_s21_p02_{t}", dt, (1, 2, 6, 9), (3, 2, 2, 5), (2, 1),
                   (0, 2), norm="l2", seed=next(s)),
            # edge values
            _adder(f"adder2d_l1_zeros_{t}", dt, (2, 3, 5, 5), (4, 3, 3, 3), 1, 1,
                   values="zeros", seed=next(s)),
            _adder(f"adder2d_l1_ties_hardtanh_{t}", dt, (2, 3, 6, 6), (4, 3, 3, 3), 1, 1,
                   values="ties", seed=next(s)),
            _adder(f"adder2d_l1_ties_sign_sign_{t}", dt, (2, 3, 6, 6), (4, 3, 3, 3), 2, 1,
                   filter_grad="sign", input_grad="sign", values="ties", seed=next(s)),
            _adder(f"adder2d_l2_ties_{t}", dt, (2, 3, 6, 6), (4, 3, 3, 3), 1, 1, norm="l2",
                   values="ties", seed=next(s)),
            _adder(f"adder2d_l1_large_{t}", dt, (2, 3, 7, 7), (4, 3, 3, 3), 1, 1,
                   values="large", seed=next(s)),
            _adder(f"adder2d_l2_large_{t}", dt, (2, 3, 7, 7), (4, 3, 3, 3), 1, 1, norm="l2",
                   values="large", seed=next(s)),
            # a real ResNet-20 layer shape (layer1)
            _adder(f"adder2d_l1_resnet_layer1_{t}", dt, (2, 16, 8, 8), (16, 16, 3, 3), 1, 1,
                   seed=next(s)),
        ]
    out.append(_adder("adder2d_l1_resnet_layer3_full_f32", "float32", (2, 32, 16, 16),
                      (64, 32, 3, 3), 2, 1, seed=next(s), small=False))
    # -- conv2d --------------------------------------------------------------------------------
    s = iter(range(20000, 30000))
    for dt in ("float64", "float32"):
        t = "f64" if dt == "float64" else "f32"
        out += [
            _conv(f"conv2d_k3s1p1_{t}", dt, (2, 3, 7, 9), (4, 3, 3, 3), 1, 1, False, next(s)),
            _conv(f"conv2d_k1s2p0_{t}", dt, (2, 4, 8, 8), (6, 4, 1, 1), 2, 0, False, next(s)),
            _conv(f"conv2d_k5s3p2_bias_{t}", dt, (1, 2, 11, 13), (3, 2, 5, 5), 3, 2, True,
                  next(s)),
            _conv(f"conv2d_k2x5_s21_p02_bias_{t}", dt, (2, 2, 6, 9), (3, 2, 2, 5), (2, 1),
                  (0, 2), True, next(s)),
        ]
    # -- batch_norm2d --------------------------------------------------------------------------
    s = iter(range(30000, 40000))
    for dt in ("float64", "float32"):
        t = "f64" if dt == "float64" else "f32"
        out += [
            _bn(f"batch_norm2d_train_{t}", dt, (4, 3, 5, 7), True, next(s)),
            _bn(f"batch_norm2d_eval_{t}", dt, (4, 3, 5, 7), False, next(s)),
            # adder-like outputs: large negative mean, moderate spread
            _bn(f"batch_norm2d_train_adder_like_{t}", dt, (4, 5, 6, 6), True, next(s),
                offset=-800.0, scale=30.0),
            _bn(f"batch_norm2d_eval_adder_like_{t}", dt, (4, 5, 6, 6), False, next(s),
                offset=-800.0, scale=30.0),
            _bn(f"batch_norm2d_train_batch1_m03_eps1e-3_{t}", dt, (1, 4, 3, 5), True, next(s),
                momentum=0.3, eps=1e-3),
            _bn(f"batch_norm2d_train_logits_{t}", dt, (8, 10, 1, 1), True, next(s),
                offset=-50.0, scale=5.0),
        ]
    # -- whole networks (float64) ----------------------------------------------------------------
    out += [
        # ResNet-20 topology at a quarter of the width (small enough to commit)
        _net("resnet20_w4_adder_sgd_step_f64", (3, 3, 3), (4, 8, 16), "adder", 40001),
        _net("resnet20_w4_cnn_sgd_step_f64", (3, 3, 3), (4, 8, 16), "cnn", 40002),
        # the real ResNet-20 (widths 16, 32, 64)
        _net("resnet20_adder_sgd_step_f64", (3, 3, 3), (16, 32, 64), "adder", 40003,
             small=False),
        _net("resnet20_cnn_sgd_step_f64", (3, 3, 3), (16, 32, 64), "cnn", 40004, small=False),
        # float32 forward only (training-mode BatchNorm), loose tolerance: see the format doc
        _net("resnet20_adder_forward_f32", (3, 3, 3), (16, 32, 64), "adder", 40005,
             small=False, dtype="float32", step=False, tol=_TOL_NET_F32),
    ]
    # -- grouped (depthwise) and dilated layers (method §2.6) -----------------------------------
    s = iter(range(50000, 60000))
    for dt in ("float64", "float32"):
        t = "f64" if dt == "float64" else "f32"
        out += [
            _adder(f"adder2d_l1_depthwise_k3s1p1_{t}", dt, (2, 4, 7, 6), (4, 1, 3, 3), 1, 1,
                   groups=4, seed=next(s)),
            _adder(f"adder2d_l1_groups2_dil2_k3s1p2_{t}", dt, (2, 4, 8, 9), (6, 2, 3, 3), 1, 2,
                   dilation=2, groups=2, seed=next(s)),
            _adder(f"adder2d_l2_depthwise_k3s2p1_{t}", dt, (2, 3, 9, 8), (6, 1, 3, 3), 2, 1,
                   norm="l2", groups=3, seed=next(s)),
            _conv(f"conv2d_depthwise_k3s1p1_bias_{t}", dt, (2, 4, 7, 6), (4, 1, 3, 3), 1, 1,
                  True, next(s), groups=4),
            _conv(f"conv2d_groups2_dil2x1_k3s1p21_{t}", dt, (2, 4, 8, 9), (6, 2, 3, 3), 1,
                  (2, 1), False, next(s), dilation=(2, 1), groups=2),
        ]
    out += [
        # a MobileNet-style depthwise block at a real size, and dilation with stride 3
        _adder("adder2d_l1_depthwise_mobilenet_full_f32", "float32", (2, 32, 28, 28),
               (32, 1, 3, 3), 2, 1, groups=32, seed=next(s), small=False),
        _adder("adder2d_l1_groups4_dil3_k3s3p3_full_f64", "float64", (2, 8, 17, 19),
               (8, 2, 3, 3), 3, 3, dilation=3, groups=4, seed=next(s), small=False),
        _conv("conv2d_depthwise_mobilenet_full_f32", "float32", (2, 32, 28, 28), (64, 1, 3, 3),
              1, 1, True, next(s), small=False, groups=32),
    ]
    if small:
        out = [c for c in out if c["small"]]
    else:
        # integer inference cases (addercore/quant/golden_cases.py), in the full set only: the
        # committed small set and its digest stay as they are
        from ..quant import golden_cases

        out += golden_cases.cases(small=False)
    return out


def select_cases(case_list, patterns=None, ops=None):
    """The cases whose name matches one of the fnmatch ``patterns`` (all when None) and whose
    op is in ``ops`` (all when None), in list order."""
    out = []
    for c in case_list:
        if patterns and not any(fnmatch.fnmatchcase(c["name"], pat) for pat in patterns):
            continue
        if ops and c["op"] not in ops:
            continue
        out.append(c)
    return out
