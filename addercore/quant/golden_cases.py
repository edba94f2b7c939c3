"""Golden cases of integer inference, for registration in addercore's golden set (same case
dict layout as :mod:`addercore.golden`: name, op, dtype, seed, params, tolerance, small).

``adder2d_int``
    Integer codes ``x`` (N, Cin, H, W) and ``weight`` (Cout, Cin, kh, kw) of 4, 6, 8, 12 and 16
    bits (uint8 ≤ 8 bits, uint16 above; one signed int8 case), value patterns ``random``,
    ``zeros``, ``extremes`` (only 0 and 2^bits − 1) and ``ties`` (many equal operands);
    output ``output`` = exact int32 ``Σ|Xp − F|`` (padded taps read ``pad_value``). Exact.
``resnet_int``
    A whole quantised ResNet (ResNet-20; ResNet-8 in the small set) made by
    :func:`addercore.quant.quantize` from a seeded random float model and seeded calibration
    images: inputs are every array of the quantised model (``q.<name>``, as in the file
    format), an image batch ``x`` and the stem's codes ``stem_codes.q<v>`` (N, H, W, C), one per
    view of the stem tensor; outputs, computed from those codes (so float convolution rounding cannot change them), are the
    int32 sums and codes of the first block and the last codes (exact) and the logits
    (float64, rtol 1e-12). The graph is in ``params["graph"]``.
"""
import numpy as np

from .kernels import adder2d_int

__all__ = ["cases", "make_inputs", "compute_case", "input_names", "OPS"]

OPS = ("adder2d_int", "resnet_int")
_EXACT = {"rtol": 0.0, "atol": 0.0}


def _int_case(name, bits, x_shape, w_shape, stride, padding, values, seed, signed=False,
              pad_value=0, small=True):
    dtype = ("int8" if signed else "uint8") if bits <= 8 else ("int16" if signed else "uint16")
    params = {"x_shape": list(x_shape), "weight_shape": list(w_shape), "bits": bits,
              "stride": [stride, stride] if isinstance(stride, int) else list(stride),
              "padding": [padding, padding] if isinstance(padding, int) else list(padding),
              "values": values, "pad_value": pad_value, "signed": signed}
    tol = dict(_EXACT, exact=["output"])
    return {"name": name, "op": "adder2d_int", "dtype": dtype, "seed": seed, "params": params,
            "tolerance": tol, "small": small}


def cases(small=False):
    """The integer cases (``small=True``: those of the committed small set)."""
    out = []
    seed = 9100
    for bits in (4, 6, 8, 12, 16):
        for values in ("random", "zeros", "extremes", "ties"):
            out.append(_int_case(f"adder2d_int_b{bits}_{values}", bits, (2, 5, 7, 6),
                                 (6, 5, 3, 3), 1, 1, values, seed))
            seed += 1
        out.append(_int_case(f"adder2d_int_b{bits}_s2_odd", bits, (3, 16, 9, 11), (17, 16, 3, 3),
                             2, 1, "random", seed))
        seed += 1
    out.append(_int_case("adder2d_int_b8_signed_pad", 8, (2, 4, 5, 5), (3, 4, 3, 3), 1, 2,
                         "random", seed, signed=True, pad_value=-3))
    out.append(_int_case("adder2d_int_b8_1x1_s2", 8, (2, 32, 8, 8), (64, 32, 1, 1), 2, 0,
                         "random", seed + 1))
    out.append(_int_case("adder2d_int_b8_resnet_layer1", 8, (2, 16, 32, 32), (16, 16, 3, 3), 1, 1,
                         "random", seed + 2, small=False))
    for layers, small_ in (((1, 1, 1), True), ((3, 3, 3), False)):
        depth = 6 * layers[0] + 2
        params = {"arch": "resnet_cifar", "layers": list(layers), "bits": 8, "scheme": "shared",
                  "glue": "fixed", "calib_batch": 16, "batch": 2, "act_percentile": 99.9}
        out.append({"name": f"resnet{depth}_int8", "op": "resnet_int", "dtype": "uint8",
                    "seed": 9200 + depth, "params": params,
                    "tolerance": {"rtol": 1e-12, "atol": 1e-12,
                                  "exact": ["layer1.0.conv1.S", "layer1.0.h.q0",
                                            "layer1.0.conv2.S", "layer1.0.out.q0", "last.q0",
                                            "last.residual"]},
                    "small": small_})
    return [c for c in out if c["small"] or not small]


def _codes(rng, shape, bits, signed, values):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if values == "zeros":
        return np.zeros(shape, np.int64)
    if values == "extremes":
        return rng.choice(np.array([lo, hi]), size=shape)
    if values == "ties":
        return rng.integers(lo, lo + 3, size=shape)
    return rng.integers(lo, hi + 1, size=shape)


def _random_model(layers, rng):
    from .. import nn
    from ..models.resnet_cifar import ResNetCIFAR

    m = ResNetCIFAR(tuple(layers), 10, kind="adder", dtype=np.float32, rng=rng)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.data[...] = rng.uniform(0.5, 1.5, c)
            mod.bias.data[...] = rng.uniform(-0.5, 0.5, c)
            mod.running_mean[...] = rng.uniform(-30, -5, c)
            mod.running_var[...] = rng.uniform(20, 60, c)
    m.eval()
    return m


def make_inputs(case):
    """Input arrays of an integer case, from ``default_rng(case["seed"])``."""
    rng = np.random.default_rng(case["seed"])
    p = case["params"]
    if case["op"] == "adder2d_int":
        dt = np.dtype(case["dtype"])
        x = _codes(rng, p["x_shape"], p["bits"], p["signed"], p["values"]).astype(dt)
        wv = "extremes" if p["values"] == "zeros" else p["values"]
        w = _codes(rng, p["weight_shape"], p["bits"], p["signed"], wv).astype(dt)
        return {"x": x, "weight": w}
    if case["op"] == "resnet_int":
        from .calibrate import quantize

        model = _random_model(p["layers"], rng)
        calib = rng.standard_normal((p["calib_batch"], 3, 32, 32)).astype(np.float32)
        q = quantize(model, calib, bits=p["bits"], scheme=p["scheme"], glue=p["glue"],
                     act_percentile=p["act_percentile"])
        x = rng.standard_normal((p["batch"], 3, 32, 32)).astype(np.float32)
        trace = {}
        q.forward(x, trace=trace)
        arrays = {f"q.{k}": v for k, v in q.arrays.items()}
        arrays["x"] = x
        for v in range(len(q.arrays["stem.vmax"])):
            arrays[f"stem_codes.q{v}"] = trace[f"stem.q{v}"]
        case["params"]["graph"] = q.graph  # the op list a port runs (JSON)
        return arrays
    raise ValueError(f"unknown integer op {case['op']!r}")


def input_names(case, arrays):
    """Names of the inputs among a golden file's arrays (the rest are outputs)."""
    if case["op"] == "adder2d_int":
        return [k for k in ("x", "weight") if k in arrays]
    return [k for k in arrays if k.startswith(("q.", "stem_codes.")) or k == "x"]


def compute_case(case, inputs):
    """Output arrays of an integer case computed by addercore (active backend)."""
    p = case["params"]
    if case["op"] == "adder2d_int":
        return {"output": adder2d_int(inputs["x"], inputs["weight"], tuple(p["stride"]),
                                      tuple(p["padding"]), p["pad_value"])}
    if case["op"] == "resnet_int":
        from .model import QuantizedModel

        arrays = {k[2:]: v for k, v in inputs.items() if k.startswith("q.")}
        q = QuantizedModel(arrays, p["graph"])
        trace = {}
        codes = [inputs[f"stem_codes.q{v}"] for v in range(len(arrays["stem.vmax"]))]
        logits = q.forward_codes(codes, trace=trace)
        last = [op for op in p["graph"]["ops"] if op["op"] == "head"][0]["input"]
        out = {k: trace[k] for k in ("layer1.0.conv1.S", "layer1.0.h.q0", "layer1.0.conv2.S",
                                     "layer1.0.out.q0")}
        out["last.q0"] = trace[f"{last}.q0"]
        out["last.residual"] = trace[f"{last}.q{len(arrays[f'{last}.vmax']) - 1}"]
        out["logits"] = logits
        return out
    raise ValueError(f"unknown integer op {case['op']!r}")
