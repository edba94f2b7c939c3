"""Golden test vectors for ports of AdderNet (CUDA, FPGA, MCU, Rust, TVM, ...).

A golden set is a directory holding ``manifest.json`` and one ``.npz`` per case; the format is
documented in ``docs/golden-format.md``. This module defines the case list (:func:`cases`),
writes a set (:func:`generate`) and checks one (:func:`verify`): either addercore itself
(recompute every case on the active backend) or another implementation's outputs
(``candidate_dir``: same file names, same array names).

Generation is deterministic: inputs come from ``numpy.random.default_rng(seed)``, outputs are
computed on the numpy reference backend with one BLAS thread, ``.npz`` files are written with
fixed zip metadata (sorted names, stored, fixed timestamps) and the manifest with sorted keys,
so generating twice gives byte-identical files whatever the thread setting.

Comparison rule (per output array): ``max|candidate - golden| <= atol + rtol · max|golden|``
(a norm-wise relative error, robust to cancellation), same shape required, integer arrays
exact. Arrays listed in a case's ``tolerance["exact"]`` are bit-exact when summed in the
canonical order; ``strict=True`` demands that.
"""
import fnmatch
import hashlib
import io
import json
import os
import sys
import time
import zipfile

import numpy as np

from . import __version__

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SUMMATION_ORDER", "cases", "generate", "verify",
           "compute_case", "make_inputs", "compare_arrays", "write_npz", "read_npz",
           "CaseResult"]

FORMAT_NAME = "addercore-golden"
FORMAT_VERSION = 1

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
def _adder(name, dtype, x_shape, w_shape, stride, padding, norm="l1", filter_grad="full",
           input_grad=None, values="normal", seed=0, small=True):
    if input_grad is None:
        input_grad = "hardtanh" if norm == "l1" else "exact"
    params = {"x_shape": list(x_shape), "weight_shape": list(w_shape),
              "stride": list(_pair(stride)), "padding": list(_pair(padding)), "norm": norm,
              "filter_grad": filter_grad, "input_grad": input_grad, "eta": 0.2,
              "values": values}
    # Small-integer inputs make every sum exact in any order.
    exact = ["output"] if norm == "l1" else []
    if values == "ties":
        exact = ["output", "grad_input", "grad_weight"]
    return {"name": name, "op": "adder2d", "dtype": dtype, "seed": seed, "params": params,
            "tolerance": _tol(dtype, exact), "small": small}


def _conv(name, dtype, x_shape, w_shape, stride, padding, bias, seed, small=True):
    params = {"x_shape": list(x_shape), "weight_shape": list(w_shape),
              "stride": list(_pair(stride)), "padding": list(_pair(padding)), "bias": bias}
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


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


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
    if small:
        out = [c for c in out if c["small"]]
    return out


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def _values(rng, shape, kind, dtype, role):
    if kind == "normal":
        a = rng.standard_normal(shape)
    elif kind == "zeros":
        if role == "x":
            a = np.zeros(shape)
        else:  # weights: half exact zeros (x == w ties at those taps), half N(0, 1)
            a = rng.standard_normal(shape) * (rng.random(shape) < 0.5)
    elif kind == "ties":  # small integers: many x == w and |x - w| == 1 (clip bounds)
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif kind == "large":
        a = rng.standard_normal(shape) * 1e4 + (3e4 if role == "x" else -2e4)
    else:
        raise ValueError(f"unknown values kind {kind!r}")
    return np.ascontiguousarray(a.astype(dtype))


def _output_hw(params):
    (_, _, h, w), (_, _, kh, kw) = params["x_shape"], params["weight_shape"]
    (sh, sw), (ph, pw) = params["stride"], params["padding"]
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def make_inputs(case):
    """Input arrays of ``case`` (dict name -> ndarray), from ``default_rng(case["seed"])``."""
    rng = np.random.default_rng(case["seed"])
    p, dt, op = case["params"], np.dtype(case["dtype"]), case["op"]
    if op in ("adder2d", "conv2d"):
        kind = p.get("values", "normal")
        x = _values(rng, p["x_shape"], kind, dt, "x")
        weight = _values(rng, p["weight_shape"], kind, dt, "w")
        g_shape = (p["x_shape"][0], p["weight_shape"][0]) + _output_hw(p)
        gkind = "ties" if kind == "ties" else "normal"
        arrays = {"x": x, "weight": weight, "grad_output": _values(rng, g_shape, gkind, dt, "g")}
        if op == "conv2d" and p["bias"]:
            arrays["bias"] = _values(rng, (p["weight_shape"][0],), "normal", dt, "b")
        return arrays
    if op == "batch_norm2d":
        c = p["x_shape"][1]
        x = rng.standard_normal(p["x_shape"]) * p["x_scale"] + p["x_offset"]
        x = x + rng.standard_normal((1, c, 1, 1)) * p["x_scale"]  # per-channel shifts
        running_mean = p["x_offset"] + rng.standard_normal(c) * p["x_scale"]
        running_var = rng.uniform(0.5, 1.5, c) * p["x_scale"] ** 2
        return {"x": x.astype(dt), "weight": rng.uniform(0.5, 1.5, c).astype(dt),
                "bias": (0.1 * rng.standard_normal(c)).astype(dt),
                "running_mean": running_mean.astype(dt), "running_var": running_var.astype(dt),
                "grad_output": rng.standard_normal(p["x_shape"]).astype(dt)}
    if op == "resnet_cifar":
        model = _build_network(p, rng, dt)
        state = model.state_dict()
        arrays = {}
        for key, value in state.items():
            if key.endswith(("bn1.weight", "bn2.weight", "downsample.1.weight")):
                value = rng.uniform(0.5, 1.5, value.shape)
            elif key.endswith(("bn1.bias", "bn2.bias", "downsample.1.bias")):
                value = 0.1 * rng.standard_normal(value.shape)
            elif key.endswith("running_mean"):
                value = 0.1 * rng.standard_normal(value.shape)
            elif key.endswith("running_var"):
                value = rng.uniform(0.5, 1.5, value.shape)
            arrays["state." + key] = np.array(value, dtype=state[key].dtype, order="C")
        size = p["image_size"]
        arrays["x"] = rng.standard_normal((p["batch"], 3, size, size)).astype(dt)
        arrays["target"] = rng.integers(0, p["num_classes"], size=p["batch"]).astype(np.int64)
        return arrays
    raise ValueError(f"unknown op {op!r}")


def _build_network(p, rng=None, dtype=np.float64):
    """The authors' CIFAR ResNet (addercore.models.ResNetCIFAR), float64; other widths than
    (16, 32, 64) give the same topology and state-dict names at that width."""
    from .models import ResNetCIFAR

    args = (tuple(p["layers"]), p["num_classes"], p["kind"], p["norm"], p["eta"],
            np.dtype(dtype), rng)
    if tuple(p.get("widths", (16, 32, 64))) == (16, 32, 64):
        return ResNetCIFAR(*args)
    return _narrow_resnet_class()(tuple(p["widths"]), *args)


def _narrow_resnet_class():
    from . import nn
    from .models import ResNetCIFAR

    class NarrowResNetCIFAR(ResNetCIFAR):
        """ResNetCIFAR with stage widths ``widths`` instead of (16, 32, 64)."""

        def __init__(self, widths, layers, num_classes, kind, norm, eta, dtype, rng):
            nn.Module.__init__(self)
            self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
            cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dtype)
            w1, w2, w3 = widths
            self.inplanes = w1
            self.conv1 = nn.Conv2d(3, w1, 3, stride=1, padding=1, bias=False, rng=rng,
                                   dtype=dtype)
            self.bn1 = nn.BatchNorm2d(w1, dtype=dtype)
            self.relu = nn.ReLU()
            self.layer1 = self._make_layer(cfg, w1, layers[0])
            self.layer2 = self._make_layer(cfg, w2, layers[1], stride=2)
            self.layer3 = self._make_layer(cfg, w3, layers[2], stride=2)
            self.avgpool = nn.AvgPool2d(8, stride=1)
            self.fc = nn.Conv2d(w3, num_classes, 1, bias=False, rng=rng, dtype=dtype)
            self.bn2 = nn.BatchNorm2d(num_classes, dtype=dtype)
            self.flatten = nn.Flatten()

    return NarrowResNetCIFAR


# --------------------------------------------------------------------------------------------
# Outputs (on the active backend)
# --------------------------------------------------------------------------------------------
def compute_case(case, inputs):
    """Output arrays of ``case`` computed by addercore (active backend) from ``inputs``."""
    from . import ops

    p, op = case["params"], case["op"]
    if op == "adder2d":
        x, w, g = inputs["x"], inputs["weight"], inputs["grad_output"]
        args = (tuple(p["stride"]), tuple(p["padding"]), p["norm"])
        out = {"output": ops.adder2d_forward(x, w, *args)}
        gi, gw = ops.adder2d_backward(x, w, g, *args, filter_grad=p["filter_grad"],
                                      input_grad=p["input_grad"])
        out.update(grad_input=gi, grad_weight=gw,
                   grad_weight_adaptive=ops.adaptive_scale(gw, p["eta"]))
        return out
    if op == "conv2d":
        x, w, g = inputs["x"], inputs["weight"], inputs["grad_output"]
        st, pad = tuple(p["stride"]), tuple(p["padding"])
        out = {"output": ops.conv2d_forward(x, w, st, pad, inputs.get("bias"))}
        out["grad_input"], out["grad_weight"] = ops.conv2d_backward(x, w, g, st, pad)
        if p["bias"]:
            out["grad_bias"] = g.sum(axis=(0, 2, 3))
        return out
    if op == "batch_norm2d":
        rm, rv = inputs["running_mean"].copy(), inputs["running_var"].copy()
        y, mean, invstd = ops.batch_norm2d_forward(inputs["x"], inputs["weight"], inputs["bias"],
                                                   rm, rv, p["training"], p["momentum"],
                                                   p["eps"])
        gi, gw, gb = ops.batch_norm2d_backward(inputs["x"], inputs["weight"],
                                               inputs["grad_output"], mean, invstd,
                                               p["training"])
        out = {"output": y, "grad_input": gi, "grad_weight": gw, "grad_bias": gb}
        if p["training"]:
            out["running_mean_updated"], out["running_var_updated"] = rm, rv
        return out
    if op == "resnet_cifar":
        return _network_step(p, inputs, np.dtype(case["dtype"]))
    raise ValueError(f"unknown op {op!r}")


def _network_step(p, inputs, dtype):
    from . import functional as F
    from .optim import SGD

    model = _build_network(p, np.random.default_rng(0), dtype)
    state = {k[len("state."):]: v for k, v in inputs.items() if k.startswith("state.")}
    model.load_state_dict(state, strict=True)
    model.train()
    names = [name for name, _ in model.named_parameters()]
    params = model.parameters()
    opt = SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
              nesterov=p["nesterov"], adaptive_scaling=True, eta=p["eta"],
              placement=p["placement"])
    logits = model(inputs["x"])
    loss = F.cross_entropy(logits, inputs["target"])
    loss.backward()
    out = {"logits": np.array(logits.data), "loss": np.array(loss.data, dtype=dtype)}
    if not p.get("sgd_step", True):
        return out
    for name, param in zip(names, params):
        out["grad." + name] = np.array(param.grad)
    opt.step()
    for key, value in model.state_dict().items():
        out["state_after." + key] = value
    for name, buf in zip(names, opt.momentum_buffers):
        out["momentum_buffer." + name] = np.array(buf)
    return out


# --------------------------------------------------------------------------------------------
# Deterministic .npz files
# --------------------------------------------------------------------------------------------
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path, arrays):
    """Write ``arrays`` (name -> ndarray) as an uncompressed ``.npz`` that ``numpy.load`` reads,
    byte-identical for identical arrays: sorted names, fixed timestamps and attributes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            if a.dtype.kind not in "fiub":
                raise TypeError(f"array {name!r}: unsupported dtype {a.dtype}")
            a = np.array(a, dtype=a.dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
            data = io.BytesIO()
            np.lib.format.write_array(data, a, version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue())
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)
    return buf.getvalue()


def read_npz(path):
    """dict name -> ndarray of an ``.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _split(case, arrays):
    """(inputs, outputs) of a golden file."""
    op = case["op"]
    if op == "resnet_cifar":
        ins = {k: v for k, v in arrays.items() if k.startswith("state.") or k in ("x", "target")}
    else:
        names = {"adder2d": ("x", "weight", "grad_output"),
                 "conv2d": ("x", "weight", "bias", "grad_output"),
                 "batch_norm2d": ("x", "weight", "bias", "running_mean", "running_var",
                                  "grad_output")}[op]
        ins = {k: v for k, v in arrays.items() if k in names}
    outs = {k: v for k, v in arrays.items() if k not in ins}
    return ins, outs


# --------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------
def _manifest_case(case, inputs, outputs, data):
    entry = {k: case[k] for k in ("name", "op", "dtype", "seed", "params", "tolerance")}
    entry["file"] = case["name"] + ".npz"
    entry["inputs"] = sorted(inputs)
    entry["outputs"] = sorted(outputs)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    return entry


def generate(out_dir, small=False, select=None, progress=None):
    """Write a golden set into ``out_dir`` (created if needed); returns the manifest dict.

    Outputs are computed on the numpy reference backend with one BLAS thread. ``select``: a
    list of fnmatch patterns on case names. ``progress``: a text stream for progress lines.
    """
    from threadpoolctl import threadpool_limits

    from ._backend import use_backend

    chosen = _select(cases(small), select, None)
    if not chosen:
        raise ValueError(f"no case matches {select!r}")
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    with use_backend("numpy"), threadpool_limits(limits=1):
        for index, case in enumerate(chosen, 1):
            t0 = time.perf_counter()
            inputs = make_inputs(case)
            outputs = compute_case(case, {k: v.copy() for k, v in inputs.items()})
            overlap = set(inputs) & set(outputs)
            if overlap:
                raise RuntimeError(f"{case['name']}: array names used twice: {sorted(overlap)}")
            data = write_npz(os.path.join(out_dir, case["name"] + ".npz"), {**inputs, **outputs})
            entries.append(_manifest_case(case, inputs, outputs, data))
            if progress is not None:
                progress.write(f"[{index:3d}/{len(chosen)}] {case['name']:<44s} "
                               f"{len(data) / 1024:8.1f} KiB {time.perf_counter() - t0:6.2f} s\n")
                progress.flush()
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "addercore_version": __version__,
        "summation_order": SUMMATION_ORDER,
        "comparison": "per output array: max|candidate - golden| <= atol + rtol * max|golden| "
                      "(same shape; integer arrays exact; arrays in tolerance.exact are "
                      "bit-exact in the canonical summation order)",
        "generator": "numpy reference backend, 1 BLAS thread",
        "set": "small" if small else "full",
        "cases": entries,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    tmp = os.path.join(out_dir, f"manifest.json.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return manifest


# --------------------------------------------------------------------------------------------
# Verify
# --------------------------------------------------------------------------------------------
def compare_arrays(golden, candidate, tol, exact=False):
    """(ok, max_abs_err, normwise_rel_err, message) for one output array."""
    golden = np.asarray(golden)
    candidate = np.asarray(candidate)
    if candidate.shape != golden.shape:
        return False, np.inf, np.inf, f"shape {candidate.shape}, expected {golden.shape}"
    if golden.dtype.kind in "iub":
        ok = np.array_equal(golden, candidate)
        return ok, 0.0 if ok else np.inf, 0.0 if ok else np.inf, "" if ok else "integers differ"
    if candidate.dtype.kind != "f":
        return False, np.inf, np.inf, f"dtype {candidate.dtype}, expected {golden.dtype}"
    if not np.all(np.isfinite(candidate)):
        return False, np.inf, np.inf, "non-finite values"
    g = golden.astype(np.float64)
    err = float(np.max(np.abs(candidate.astype(np.float64) - g))) if g.size else 0.0
    scale = float(np.max(np.abs(g))) if g.size else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else np.inf)
    if exact:
        ok = err == 0.0
        return ok, err, rel, "" if ok else "not bit-exact (--strict)"
    bound = tol["atol"] + tol["rtol"] * scale
    ok = err <= bound
    return ok, err, rel, "" if ok else f"error {err:.3g} > bound {bound:.3g}"


class CaseResult:
    """Outcome of one case: ``ok``, worst array, max abs/rel error, message, seconds."""

    def __init__(self, name, op, dtype, ok, worst, max_abs, max_rel, message, seconds):
        self.name, self.op, self.dtype = name, op, dtype
        self.ok, self.worst, self.max_abs, self.max_rel = ok, worst, max_abs, max_rel
        self.message, self.seconds = message, seconds

    def __repr__(self):
        return f"CaseResult({self.name!r}, ok={self.ok}, max_abs={self.max_abs:.3g})"


def _select(case_list, patterns, ops_):
    out = []
    for c in case_list:
        if patterns and not any(fnmatch.fnmatchcase(c["name"], pat) for pat in patterns):
            continue
        if ops_ and c["op"] not in ops_:
            continue
        out.append(c)
    return out


def load_manifest(golden_dir):
    """Read and check ``golden_dir/manifest.json``."""
    path = os.path.join(golden_dir, "manifest.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {golden_dir!r} a golden set?")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {manifest.get('format_version')!r} is not "
                         f"supported (this addercore reads {FORMAT_VERSION})")
    return manifest


def _verify_case(golden_dir, entry, candidate_dir, strict):
    t0 = time.perf_counter()
    path = os.path.join(golden_dir, entry["file"])

    def result(ok, worst="", max_abs=0.0, max_rel=0.0, message=""):
        return CaseResult(entry["name"], entry["op"], entry["dtype"], ok, worst, max_abs,
                          max_rel, message, time.perf_counter() - t0)

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return result(False, message=f"golden file unreadable: {exc}")
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return result(False, message="golden file corrupt (sha256 mismatch)")
    try:
        arrays = read_npz(path)
        inputs = {k: arrays[k] for k in entry["inputs"]}
        golden = {k: arrays[k] for k in entry["outputs"]}
    except Exception as exc:
        return result(False, message=f"golden file {entry['file']} unusable: "
                                     f"{type(exc).__name__}: {exc}")
    if candidate_dir is None:
        try:
            got = compute_case(entry, {k: v.copy() for k, v in inputs.items()})
        except Exception as exc:  # reported per case; the summary shows it
            return result(False, message=f"{type(exc).__name__}: {exc}")
    else:
        cpath = os.path.join(candidate_dir, entry["file"])
        if not os.path.isfile(cpath):
            return result(False, message=f"missing candidate file {entry['file']}")
        try:
            got = read_npz(cpath)
        except Exception as exc:
            return result(False, message=f"unreadable candidate file: {exc}")
    ok, worst, worst_abs, worst_rel, msgs = True, "", 0.0, 0.0, []
    exact = set(entry["tolerance"].get("exact", ())) if strict else set()
    for name in entry["outputs"]:
        if name not in got:
            ok = False
            msgs.append(f"{name}: missing")
            continue
        a_ok, a_abs, a_rel, msg = compare_arrays(golden[name], got[name], entry["tolerance"],
                                                 exact=name in exact)
        if not a_ok:
            ok = False
            msgs.append(f"{name}: {msg}")
        if a_rel > worst_rel or (a_rel == worst_rel and a_abs > worst_abs) or not worst:
            worst, worst_abs, worst_rel = name, a_abs, a_rel
    return result(ok, worst, worst_abs, worst_rel, "; ".join(msgs[:3]) +
                  (f" (+{len(msgs) - 3} more)" if len(msgs) > 3 else ""))


def verify(golden_dir, candidate_dir=None, select=None, ops=None, strict=False, progress=None):
    """Check every case of the golden set in ``golden_dir``; returns a list of CaseResult.

    Without ``candidate_dir`` addercore recomputes each case on its active backend; with it,
    the arrays of ``candidate_dir/<case file>`` are compared. ``select``: fnmatch patterns on
    case names; ``ops``: op names; ``strict``: demand bit-exactness of ``tolerance.exact``.
    """
    if candidate_dir is not None and not os.path.isdir(candidate_dir):
        raise FileNotFoundError(f"candidate directory {candidate_dir!r} does not exist")
    manifest = load_manifest(golden_dir)
    entries = _select(manifest["cases"], select, ops)
    if not entries:
        raise ValueError("no case selected")
    results = []
    for index, entry in enumerate(entries, 1):
        r = _verify_case(golden_dir, entry, candidate_dir, strict)
        results.append(r)
        if progress is not None:
            status = "PASS" if r.ok else "FAIL"
            progress.write(f"[{index:3d}/{len(entries)}] {r.name:<44s} {status}  "
                           f"max abs {r.max_abs:9.3g}  rel {r.max_rel:9.3g}  {r.seconds:6.2f} s"
                           + (f"  {r.message}" if r.message else "") + "\n")
            progress.flush()
    return results


def summary_table(results, stream=sys.stdout):
    """Print the per-case table and the per-op counts."""
    width = max([len(r.name) for r in results] + [4])
    head = (f"{'case':<{width}}  {'op':<13} {'dtype':<8} {'result':<6} {'worst array':<28} "
            f"{'max abs err':>11} {'max rel err':>11}")
    stream.write(head + "\n" + "-" * len(head) + "\n")
    for r in results:
        stream.write(f"{r.name:<{width}}  {r.op:<13} {r.dtype:<8} {'PASS' if r.ok else 'FAIL':<6} "
                     f"{r.worst[:28]:<28} {r.max_abs:11.3g} {r.max_rel:11.3g}\n")
    stream.write("-" * len(head) + "\n")
    per_op = {}
    for r in results:
        counts = per_op.setdefault(r.op, [0, 0])
        counts[0 if r.ok else 1] += 1
    for op, (npass, nfail) in sorted(per_op.items()):
        stream.write(f"{op:<13} {npass} passed, {nfail} failed\n")
    npass = sum(r.ok for r in results)
    stream.write(f"total: {npass}/{len(results)} passed\n")
