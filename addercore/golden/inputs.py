"""Input arrays of golden cases, one function per kind, drawn from ``default_rng(seed)``.

The draws are part of the format (a regenerated set must be byte-identical): the order of
the ``rng`` calls below must never change for an existing kind.
"""
import numpy as np

from ..ops.geometry import Conv2dGeometry
from .network import build_network

__all__ = ["make_inputs", "sliding_window_inputs", "batch_norm_inputs", "network_inputs"]


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


def sliding_window_inputs(case, rng, dt):
    """``adder2d`` and ``conv2d``: x, weight, grad_output (and bias when params.bias)."""
    p = case["params"]
    kind = p.get("values", "normal")
    x = _values(rng, p["x_shape"], kind, dt, "x")
    weight = _values(rng, p["weight_shape"], kind, dt, "w")
    geo = Conv2dGeometry.from_shapes(p["x_shape"], p["weight_shape"], p["stride"], p["padding"],
                                     p.get("dilation", 1), p.get("groups", 1))
    gkind = "ties" if kind == "ties" else "normal"
    arrays = {"x": x, "weight": weight,
              "grad_output": _values(rng, geo.out_shape, gkind, dt, "g")}
    if p.get("bias"):
        arrays["bias"] = _values(rng, (geo.cout,), "normal", dt, "b")
    return arrays


def batch_norm_inputs(case, rng, dt):
    """``batch_norm2d``: x (with per-channel shifts), weight, bias, running statistics,
    grad_output."""
    p = case["params"]
    c = p["x_shape"][1]
    x = rng.standard_normal(p["x_shape"]) * p["x_scale"] + p["x_offset"]
    x = x + rng.standard_normal((1, c, 1, 1)) * p["x_scale"]  # per-channel shifts
    running_mean = p["x_offset"] + rng.standard_normal(c) * p["x_scale"]
    running_var = rng.uniform(0.5, 1.5, c) * p["x_scale"] ** 2
    return {"x": x.astype(dt), "weight": rng.uniform(0.5, 1.5, c).astype(dt),
            "bias": (0.1 * rng.standard_normal(c)).astype(dt),
            "running_mean": running_mean.astype(dt), "running_var": running_var.astype(dt),
            "grad_output": rng.standard_normal(p["x_shape"]).astype(dt)}


def network_inputs(case, rng, dt):
    """``resnet_cifar``: ``state.<name>`` for every parameter and buffer (BatchNorm values
    random, not 1/0), a batch ``x`` and its ``target`` classes."""
    p = case["params"]
    model = build_network(p, rng, dt)
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


def make_inputs(case):
    """Input arrays of ``case`` (dict name -> ndarray), from ``default_rng(case["seed"])``."""
    from .kinds import kind_of

    rng = np.random.default_rng(case["seed"])
    return kind_of(case).inputs(case, rng, np.dtype(case["dtype"]))
