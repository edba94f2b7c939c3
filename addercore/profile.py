"""Operation counts of a model: multiplications and additions per layer and in total.

Convention (the paper's, supplement Table 1):

- A multiplication layer (Conv2d, Linear) costs one multiplication and one addition per tap
  (multiply-accumulate): ``mul = add = N·Cout·Ho·Wo·Cin·kh·kw`` (``out·in`` for Linear).
- An ℓ1 adder layer costs **two additions per tap and no multiplication**: the subtraction
  ``x - f`` and the accumulation. The absolute value is a sign-bit operation and is not counted.
- An ℓ2 adder layer costs one multiplication (the square) and two additions per tap.
- Bias additions, BatchNorm, ReLU, pooling and residual additions are not counted (they are the
  same in the CNN and the AdderNet and negligible, as in the paper).

With this convention ResNet-18 on 1×3×224×224 gives CNN 1.81G mul / 1.81G add, ℓ1-AdderNet
0 mul / 3.39G add in the replaced layers (3.51G add in total with the multiplication first
and last layers, whose 0.12G multiplications the paper reports separately), ℓ2-AdderNet
1.81G mul / 3.51G add — Table 1's 1.8G / 1.8G, 0 / 3.6G, 1.8G / 3.6G within 3%.

Each counted layer is tagged ``part``: ``"first"`` (the first counted layer in execution order),
``"last"`` (the last one) or ``"body"`` (the layers AdderNet replaces).

Shapes are propagated with stand-in forwards: every leaf layer of a known type returns zeros of
its analytically computed output shape, so even ResNet-18 at 224×224 is counted in
milliseconds, without running the (slow) adder kernels.
"""
from dataclasses import dataclass, field

import numpy as np

from . import nn
from .ops.geometry import Conv2dGeometry, output_size
from .tensor import Tensor, no_grad

__all__ = ["LayerOps", "OpsReport", "count_ops", "format_ops"]


@dataclass
class LayerOps:
    """One counted layer: name, kind ("conv", "linear", "adder_l1", "adder_l2"), shapes,
    ``taps`` (= multiply-accumulate count of the equivalent convolution), ``mul``, ``add``,
    ``part`` ("first", "body", "last")."""

    name: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    taps: int
    mul: int
    add: int
    part: str = "body"


@dataclass
class OpsReport:
    """Result of :func:`count_ops`: ``layers`` (list of :class:`LayerOps` in execution order),
    totals over all layers (``mul``, ``add``), over the body (replaced) layers (``body_mul``,
    ``body_add``) and over the first and last layers (``first_last_mul``, ``first_last_add``)."""

    layers: list = field(default_factory=list)

    def _sum(self, attr, parts):
        return int(sum(getattr(l, attr) for l in self.layers if l.part in parts))

    @property
    def mul(self):
        return self._sum("mul", ("first", "body", "last"))

    @property
    def add(self):
        return self._sum("add", ("first", "body", "last"))

    @property
    def body_mul(self):
        return self._sum("mul", ("body",))

    @property
    def body_add(self):
        return self._sum("add", ("body",))

    @property
    def first_last_mul(self):
        return self._sum("mul", ("first", "last"))

    @property
    def first_last_add(self):
        return self._sum("add", ("first", "last"))

    def as_dict(self):
        """JSON-friendly summary."""
        return {"mul": self.mul, "add": self.add, "body_mul": self.body_mul,
                "body_add": self.body_add, "first_last_mul": self.first_last_mul,
                "first_last_add": self.first_last_add,
                "layers": [vars(l) | {"input_shape": list(l.input_shape),
                                      "output_shape": list(l.output_shape)}
                           for l in self.layers]}


def _conv_out(hw, kernel, stride, padding):
    """(Ho, Wo) of a pooling window over ``hw`` (the one formula, ops.geometry)."""
    return tuple(output_size(hw[i], kernel[i], stride[i], padding[i]) for i in range(2))


def _shape_fn(module):
    """Analytic output shape of a known leaf module, or None (unknown: run it for real)."""

    if isinstance(module, (nn.Adder2d, nn.Conv2d)):
        def f(s):
            if len(s) != 4 or s[1] != module.in_channels:
                raise ValueError(f"{type(module).__name__} expects (N, {module.in_channels}, H, W),"
                                 f" got {s}")
            geo = Conv2dGeometry.from_shapes(
                s, (module.out_channels, module.in_channels) + tuple(module.kernel_size),
                module.stride, module.padding)
            if geo.ho < 1 or geo.wo < 1:
                raise ValueError(f"input {s} too small for kernel {module.kernel_size}")
            return geo.out_shape
        return f
    if isinstance(module, nn.Linear):
        return lambda s: (s[0], module.out_features)
    if isinstance(module, (nn.BatchNorm2d, nn.ReLU)):
        return lambda s: s
    if isinstance(module, nn.Flatten):
        return lambda s: (s[0], int(np.prod(s[1:])))
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return lambda s: s[:2] + tuple(module.output_size)
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        pad = getattr(module, "padding", (0, 0))
        return lambda s: s[:2] + _conv_out(s[2:], module.kernel_size, module.stride, pad)
    return None


def _layer_ops(name, module, in_shape, out_shape):
    if isinstance(module, nn.Linear):
        taps = int(np.prod(out_shape)) * module.in_features
        return LayerOps(name, "linear", in_shape, out_shape, taps, taps, taps)
    if isinstance(module, (nn.Conv2d, nn.Adder2d)):
        kh, kw = module.kernel_size
        taps = int(np.prod(out_shape)) * module.in_channels * kh * kw
        if isinstance(module, nn.Conv2d):
            return LayerOps(name, "conv", in_shape, out_shape, taps, taps, taps)
        if module.norm == "l1":
            return LayerOps(name, "adder_l1", in_shape, out_shape, taps, 0, 2 * taps)
        return LayerOps(name, "adder_l2", in_shape, out_shape, taps, taps, 2 * taps)
    return None


def count_ops(model, input_shape):
    """Count multiplications and additions of ``model`` on inputs of ``input_shape``
    (a tuple such as ``(1, 3, 224, 224)``; counts scale with the batch size).

    Returns an :class:`OpsReport`. The model's parameters are not touched; its forward is
    run once with stand-in layers that only propagate shapes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an addercore.nn.Module, got {type(model).__name__}")
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) < 2
            or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                   for d in input_shape)):
        raise ValueError(f"input_shape must be a tuple of positive ints like (1, 3, 32, 32), "
                         f"got {input_shape!r}")
    report = OpsReport()
    patched = []
    dtype = model.dtype

    def make_stub(name, module, shape_fn):
        def stub(x, *args, **kwargs):  # e.g. BatchNorm2d(x, residual=..., relu=True)
            in_shape = tuple(x.data.shape)
            out_shape = tuple(int(d) for d in shape_fn(in_shape))
            ops = _layer_ops(name, module, in_shape, out_shape)
            if ops is not None:
                report.layers.append(ops)
            return Tensor(np.zeros(out_shape, dtype=dtype))
        return stub

    for name, module in model.named_modules():
        if module is model or next(module.children(), None) is not None:
            continue
        shape_fn = _shape_fn(module)
        if shape_fn is not None:
            object.__setattr__(module, "forward", make_stub(name, module, shape_fn))
            patched.append(module)
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(np.zeros(tuple(int(d) for d in input_shape), dtype=dtype))
    finally:
        for module in patched:
            del module.__dict__["forward"]
        model.train(was_training)
    if report.layers:
        report.layers[0].part = "first"
        if len(report.layers) > 1:
            report.layers[-1].part = "last"
    return report


def _g(n):
    return f"{n / 1e9:.3f}G" if n >= 1e8 else f"{n / 1e6:.3f}M"


def format_ops(report):
    """A printable per-layer table plus the totals."""
    lines = [f"{'layer':34s} {'kind':9s} {'output':>20s} {'mul':>10s} {'add':>10s} part"]
    for l in report.layers:
        lines.append(f"{l.name:34s} {l.kind:9s} {str(l.output_shape):>20s} {_g(l.mul):>10s} "
                     f"{_g(l.add):>10s} {l.part}")
    lines.append(f"body (replaced layers): mul {_g(report.body_mul)}, add {_g(report.body_add)}")
    lines.append(f"first+last layers:      mul {_g(report.first_last_mul)}, "
                 f"add {_g(report.first_last_add)}")
    lines.append(f"total:                  mul {_g(report.mul)}, add {_g(report.add)}")
    return "\n".join(lines)
