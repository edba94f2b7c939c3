"""Integer AdderNet inference: post-training quantisation, integer ℓ1 kernels, the file format.

* :func:`quantize` — a trained ℓ1 AdderNet ResNet + calibration images -> :class:`QuantizedModel`
  (shared or grouped scales, lossless weight clamp folded into BatchNorm, bias correction,
  fixed-point glue; spec §6, docs/method.md §11).
* :func:`adder2d_int` — exact int32 Σ|xq − fq| (compiled SAD kernels or the numpy reference).
* :func:`save` / :func:`load` — the quantised model file (docs/integer-format.md).
"""
from .calibrate import fold_weight_clamp, quantize
from .kernels import adder2d_int, adder2d_int_nhwc
from .fileformat import load, save
from .model import QuantizedModel

__all__ = ["quantize", "fold_weight_clamp", "adder2d_int", "adder2d_int_nhwc", "QuantizedModel", "save", "load"]
