"""Post-training quantisation of a trained ℓ1 AdderNet ResNet (spec §6; docs/method.md §11).

Steps (:func:`quantize`):

1. **Float pass** on the calibration images (training images; never the test set): every
   activation tensor that feeds an adder layer (all follow a ReLU, so they lie in ``[0, hi]``)
   and the per-channel mean of every adder layer's float output.
2. **Ranges**: ``hi`` of each tensor is its maximum, or the ``act_percentile``-th percentile of
   its values, or (``"mse"``) the clip that minimises the squared quantisation error of the
   tensor and of its consumers' clamped filters (the *activation clamp*: values above ``hi``
   are clipped, trading the outliers for resolution). Shared scale ``r = hi / (2^bits − 1)``, zero point 0.
3. **Lossless weight clamp** (Nie et al. 2022): the filters of a layer whose input lies in
   ``[0, hi]`` are clamped to ``[0, hi]``; per output channel the constant
   ``C[t] = Σ |F − clip(F, 0, hi)|`` moves into the BatchNorm mean (exact; see
   :func:`fold_weight_clamp`). Then ``fq = round(F'/r)``: activations and filters share ``r``.
4. **Grouped scales** (``scheme="grouped"``): the filters are sorted by their largest clamped
   value and split into ``groups`` groups of equal size; group ``g`` gets its own
   ``hi_g = m_g·r`` (``m_g`` the group's largest value in base codes) and scale
   ``r_g = hi_g/(2^bits − 1)``. The input is quantised once per group (a *view* of the tensor)
   and clipped at ``hi_g``; the clipped part is added back exactly by the integer excess sums
   ``E_g`` (:mod:`.model`).
5. **Sequential pass with bias correction** (Nagel et al. 2019): the quantised network runs on
   the calibration images op by op; at each adder layer the mean per-channel difference
   between its quantised output and the float model's output (float input) moves into the
   BatchNorm mean, so the accumulated bias of everything upstream is corrected too.
6. **Glue**: each BatchNorm (with the clamp constant and bias correction), the residual add,
   ReLU and the requantisation to every view of the next tensor become one affine map on the
   int32 sums, ``u = Σ alpha·src + beta``, and its fixed-point form (int32 multiplier, int64
   bias, shift).

The first convolution and the final 1×1 classifier are multiplication layers and stay float
(the stem's output is quantised; the head reads the last codes).
"""
import math

import numpy as np

from .. import ops
from .model import FORMAT, VERSION, QuantizedModel, code_dtype

__all__ = ["quantize", "fold_weight_clamp", "SCHEMES", "GLUES"]

SCHEMES = ("shared", "grouped")
GLUES = ("fixed", "float")
#: fixed-point multipliers stay below 2^MULT_BITS (products with int32 sums fit int64)
MULT_BITS = 24
MAX_SHIFT = 48


# --------------------------------------------------------------------------------------------
# Model structure
# --------------------------------------------------------------------------------------------
def _bn_affine(bn):
    """Eval-mode BatchNorm as float64 (gamma/sigma, beta, mean): z = g·(y − mean) + beta."""
    g = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    return g, bn.bias.data.astype(np.float64), bn.running_mean.astype(np.float64)


def _structure(model):
    """Validate a ResNetCIFAR ℓ1 AdderNet; returns [(block name, block)]."""
    from .. import nn
    from ..models.resnet_cifar import ResNetCIFAR

    if not isinstance(model, ResNetCIFAR):
        raise TypeError("quantize: model must be an addercore.models.ResNetCIFAR (resnet20/32/56) "
                        f"AdderNet, got {type(model).__name__}")
    if model.kind != "adder" or model.norm != "l1":
        raise ValueError(f"quantize: model must be an ℓ1 AdderNet (kind='adder', norm='l1'), "
                         f"got kind={model.kind!r}, norm={model.norm!r}")
    blocks = []
    for lname in ("layer1", "layer2", "layer3"):
        for i, block in enumerate(getattr(model, lname)):
            name = f"{lname}.{i}"
            pairs = [("conv1", block.conv1, "bn1", block.bn1),
                     ("conv2", block.conv2, "bn2", block.bn2)]
            if block.downsample is not None:
                ds = list(block.downsample)
                pairs.append(("downsample.0", ds[0], "downsample.1",
                              ds[1] if len(ds) > 1 else None))
            for cname, conv, bname, bn in pairs:
                if not isinstance(conv, nn.Adder2d) or conv.norm != "l1":
                    raise ValueError(f"quantize: {name}.{cname} must be an ℓ1 Adder2d, got "
                                     f"{type(conv).__name__}")
                if not isinstance(bn, nn.BatchNorm2d):
                    raise ValueError(
                        f"quantize: adder layer {name}.{cname} must be followed by a BatchNorm2d "
                        f"({name}.{bname} is {type(bn).__name__}); the clamp constant, the "
                        "scale and the bias correction fold into it")
            blocks.append((name, block))
    for attr in ("bn1", "bn2"):
        if not isinstance(getattr(model, attr), nn.BatchNorm2d):
            raise ValueError(f"quantize: model.{attr} must be a BatchNorm2d")
    return blocks


def fold_weight_clamp(adder, bn, lo, hi):
    """Clamp ``adder``'s filters to ``[lo, hi]`` in place and fold the exact constant into
    ``bn.running_mean`` (docs/method.md §11.2). Exact for every input in ``[lo, hi]`` including
    the padded zeros (so ``lo ≤ 0 ≤ hi`` when the layer pads). Returns C (Cout,) float64.

    ``|x − f| = |x − hi| + (f − hi)`` for f > hi and ``|x − lo| + (lo − f)`` for f < lo, so with
    ``Y = −Σ|X − F|`` the clamped layer gives ``Y' = Y + C`` and ``running_mean + C`` undoes it.
    """
    if not lo <= hi:
        raise ValueError(f"fold_weight_clamp: need lo <= hi, got lo={lo}, hi={hi}")
    f = adder.adder.data
    f64 = f.astype(np.float64)
    clamped = np.clip(f64, lo, hi)
    c = np.abs(f64 - clamped).sum(axis=(1, 2, 3))
    adder.adder.data[...] = clamped.astype(f.dtype)
    bn.running_mean[...] = (bn.running_mean.astype(np.float64) + c).astype(bn.running_mean.dtype)
    return c


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def _check_args(calib_images, bits, scheme, groups, act_percentile, glue):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if glue not in GLUES:
        raise ValueError(f"glue must be one of {GLUES}, got {glue!r}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if act_percentile is not None and act_percentile != "mse" and not (
            isinstance(act_percentile, (int, float)) and 50.0 < act_percentile <= 100.0):
        raise ValueError(f"act_percentile must be None, 'mse' or in (50, 100], got "
                         f"{act_percentile!r}")
    if not isinstance(calib_images, np.ndarray):
        raise TypeError(f"calib_images must be a numpy.ndarray, got {type(calib_images).__name__}")
    if calib_images.dtype not in (np.float32, np.float64):
        raise TypeError(f"calib_images must be float32 or float64 (normalised images), got "
                        f"{calib_images.dtype}")
    if calib_images.ndim != 4 or calib_images.shape[1:] != (3, 32, 32) or calib_images.shape[0] < 1:
        raise ValueError(f"calib_images must have shape (N >= 1, 3, 32, 32) (normalised CIFAR "
                         f"images, NCHW), got {calib_images.shape}")


# --------------------------------------------------------------------------------------------
# Float pass
# --------------------------------------------------------------------------------------------
def _bn_relu(y, bn, relu=True, residual=None):
    g, b, m = _bn_affine(bn)
    z = (y.astype(np.float64) - m[:, None, None]) * g[:, None, None] + b[:, None, None]
    if residual is not None:
        z = z + residual
    return np.maximum(z, 0) if relu else z


def _float_pass(model, blocks, x):
    """Float64-glued float32 pass: every adder input tensor (NCHW float32) and every adder
    layer's per-channel mean distance D = −Y (float64)."""
    acts, dmean = {}, {}
    w = model.conv1.weight.data
    a = _bn_relu(ops.conv2d_forward(x.astype(w.dtype), w, 1, 1), model.bn1).astype(w.dtype)
    acts["stem"] = a

    def dist(name, layer, inp):
        y = ops.adder2d_forward(inp, layer.adder.data, layer.stride, layer.padding)
        dmean[name] = -y.mean(axis=(0, 2, 3), dtype=np.float64)
        return y

    cur = "stem"
    for name, blk in blocks:
        inp = acts[cur]
        y1 = dist(f"{name}.conv1", blk.conv1, inp)
        h = _bn_relu(y1, blk.bn1).astype(inp.dtype)
        acts[f"{name}.h"] = h
        y2 = dist(f"{name}.conv2", blk.conv2, h)
        if blk.downsample is not None:
            ds = list(blk.downsample)
            res = _bn_relu(dist(f"{name}.downsample.0", ds[0], inp), ds[1], relu=False)
        else:
            res = inp.astype(np.float64)
        out = _bn_relu(y2, blk.bn2, residual=res).astype(inp.dtype)
        acts[f"{name}.out"] = out
        cur = f"{name}.out"
    return acts, dmean, cur


def _mse_range(a, qmax, filters):
    """The clip ``hi`` (on a grid of 5%..100% of the max) minimising the mean squared
    quantisation error of the activations plus that of the consumers' clamped filter taps
    (1M-value subsample of the activations, seeded)."""
    flat = a.reshape(-1)
    if flat.size > 1_000_000:
        flat = np.random.default_rng(0).choice(flat, 1_000_000, replace=False)
    flat = flat.astype(np.float64)
    taps = np.concatenate([f.reshape(-1) for f in filters]).astype(np.float64) if filters \
        else np.zeros(0)
    amax = float(flat.max())
    best, best_hi = np.inf, amax
    for k in range(5, 101):
        hi = amax * k / 100.0
        r = hi / qmax
        ex = flat - np.clip(np.rint(flat / r), 0, qmax) * r
        ft = np.clip(taps, 0.0, hi)
        ef = ft - np.rint(ft / r) * r
        err = float(np.mean(ex * ex)) + (float(np.mean(ef * ef)) if taps.size else 0.0)
        if err < best:
            best, best_hi = err, hi
    return best_hi


def _range(a, act_percentile, qmax=None, filters=()):
    if act_percentile == "mse":
        return _mse_range(a, qmax, filters) if a.max() > 0 else 1.0
    hi = float(a.max()) if act_percentile is None else float(np.percentile(a, act_percentile))
    if not hi > 0:  # a dead tensor (all zeros): any positive range represents it exactly
        hi = 1.0
    return hi


# --------------------------------------------------------------------------------------------
# Quantisation
# --------------------------------------------------------------------------------------------
def _fixed_point(alpha, beta, scale):
    """int32 multipliers (K, Cout), int64 bias (Cout,), shift for u/scale (see module doc)."""
    a = alpha / scale
    b = beta / scale
    amax = float(np.abs(a).max()) if a.size else 0.0
    shift = MAX_SHIFT if amax == 0 else min(MAX_SHIFT,
                                            int(math.floor(math.log2((2**MULT_BITS - 1) / amax))))
    shift = max(shift, 1)
    mult = np.rint(a * 2.0**shift)
    bias = np.rint(b * 2.0**shift)
    if np.abs(mult).max(initial=0) >= 2**31 or np.abs(bias).max(initial=0) >= 2**62:
        raise ValueError("quantize: fixed-point glue out of range (a scale is degenerate)")
    return mult.astype(np.int32), bias.astype(np.int64), shift


def quantize(model, calib_images, bits=8, scheme="shared", groups=4, act_percentile=None,
             glue="fixed", bias_correction=True, residual_bits=16):
    """Quantise a trained ℓ1 AdderNet ResNet (resnet20/32/56) for integer inference.

    model: :class:`addercore.models.ResNetCIFAR`, kind="adder", norm="l1", in eval mode or not
    (it is not modified). calib_images: float32/float64 (N, 3, 32, 32), normalised like the
    model's input — a few hundred *training* images. bits: 2..16 (codes uint8 ≤ 8, else uint16).
    scheme: "shared" (one scale per tensor, filters clamped to the input range) or "grouped"
    (``groups`` filter groups per layer, each with its own scale). act_percentile: None (range
    = max), the percentile in (50, 100] of the calibration activations used as the clip, or
    "mse" (the clip minimising the squared quantisation error of activations + filters).
    glue: "fixed" (integer-only body) or "float" (float64 glue), the default of the returned
    model (both sets of parameters are stored). bias_correction: fold the mean per-channel
    error on the calibration images into each BatchNorm. residual_bits: None, or the width
    (bits..16) of the residual view: the identity shortcuts and the head read the block
    outputs as codes of this width over the full (max) range, instead of the adder layers'
    ``bits``-wide codes.

    Returns a :class:`QuantizedModel`. Raises TypeError/ValueError on a model that is not an ℓ1
    AdderNet ResNet or has an adder layer without a following BatchNorm2d, on calibration
    images of another dtype/shape, on bits outside 2..16 and on other bad options.
    """
    _check_args(calib_images, bits, scheme, groups, act_percentile, glue)
    if residual_bits is not None and (isinstance(residual_bits, bool)
                                      or not isinstance(residual_bits, (int, np.integer))
                                      or not bits <= residual_bits <= 16):
        raise ValueError(f"residual_bits must be None or an int in [bits, 16] = [{bits}, 16], "
                         f"got {residual_bits!r}")
    blocks = _structure(model)
    bits, groups = int(bits), int(groups)
    qmax = (1 << bits) - 1
    dt = code_dtype(bits)
    acts, dmean, last = _float_pass(model, blocks, calib_images)

    arrays, tensors, op_list = {}, {}, []
    consumers = {t: [] for t in acts}  # the adder filters that read each tensor
    prev = "stem"
    for name, blk in blocks:
        consumers[prev].append(blk.conv1.adder.data)
        consumers[f"{name}.h"].append(blk.conv2.adder.data)
        if blk.downsample is not None:
            consumers[prev].append(list(blk.downsample)[0].adder.data)
        prev = f"{name}.out"
    hi = {t: _range(a, act_percentile, qmax, consumers[t]) for t, a in acts.items()}
    scales = {t: [h / qmax] for t, h in hi.items()}
    vmaxes = {t: [qmax] for t in hi}

    def residual_view(t):
        """Index of the view the identity shortcut / head reads (see residual_bits)."""
        if residual_bits is None:
            return 0
        vm = (1 << residual_bits) - 1
        scales[t].append(_range(acts[t], None) / vm)
        vmaxes[t].append(vm)
        return len(scales[t]) - 1

    # stem: float conv + folded BN (+ ReLU in the quantisation clip)
    g, b, m = _bn_affine(model.bn1)
    arrays["stem.weight"] = model.conv1.weight.data.astype(np.float32)
    arrays["stem.scale"] = g
    arrays["stem.shift"] = b - g * m
    op_list.append({"op": "stem", "output": "stem", "in_channels": int(model.conv1.in_channels),
                    "kernel": list(model.conv1.kernel_size), "stride": list(model.conv1.stride),
                    "padding": list(model.conv1.padding)})

    # adder layers: clamp, fold, scales, codes, groups
    layer_info = {}  # name -> dict(bn, C, group scales, input tensor)

    def add_layer(name, layer, bn, tensor):
        r = scales[tensor][0]
        f = layer.adder.data.astype(np.float64)
        fc = np.clip(f, 0.0, hi[tensor])
        c = np.abs(f - fc).sum(axis=(1, 2, 3))
        cout = f.shape[0]
        if scheme == "grouped" and groups > 1:
            ng = min(groups, cout)
            peak = np.clip(np.ceil(fc.reshape(cout, -1).max(axis=1) / r - 1e-9), 1, qmax)
            order = np.argsort(peak, kind="stable")
            group = np.empty(cout, np.int32)
            limits, views, gscale = [], [], []
            for gi, chans in enumerate(np.array_split(order, ng)):
                group[chans] = gi
                mg = int(peak[chans].max())
                limits.append(mg)
                s = mg * r / qmax
                if mg == qmax:
                    views.append(0)
                else:
                    scales[tensor].append(s)
                    vmaxes[tensor].append(qmax)
                    views.append(len(scales[tensor]) - 1)
                gscale.append(s)
        else:
            group = np.zeros(cout, np.int32)
            limits, views, gscale = [qmax], [0], [r]
        gscale = np.asarray(gscale)
        fq = np.clip(np.rint(fc / gscale[group][:, None, None, None]), 0, qmax).astype(dt)
        arrays[f"{name}.filters"] = fq
        arrays[f"{name}.group"] = group
        arrays[f"{name}.views"] = np.asarray(views, np.int32)
        arrays[f"{name}.limit"] = np.asarray(limits, np.int32)
        grouped = len(views) > 1
        layer_info[name] = dict(bn=bn, C=c, rg=gscale[group], r=r, grouped=grouped,
                                tensor=tensor)
        op_list.append({"op": "adder", "name": name, "input": tensor,
                        "in_channels": int(f.shape[1]), "out_channels": int(cout),
                        "kernel": [int(f.shape[2]), int(f.shape[3])],
                        "stride": list(layer.stride), "padding": list(layer.padding),
                        "groups": len(views)})

    def layer_terms(name):
        """Sources and (alpha rows, beta) of one adder layer + its BN, before bias correction
        (its beta gets the correction during the sequential pass)."""
        info = layer_info[name]
        g, b, m = _bn_affine(info["bn"])
        srcs = [{"kind": "S", "of": name}]
        alpha = [-g * info["rg"]]
        if info["grouped"]:
            srcs.append({"kind": "E", "of": name})
            alpha.append(-g * info["r"])
        return srcs, alpha, g, b, m

    cur = "stem"
    for name, blk in blocks:
        add_layer(f"{name}.conv1", blk.conv1, blk.bn1, cur)
        op_list.append({"op": "glue", "name": f"{name}.bn1", "output": f"{name}.h",
                        "layers": [f"{name}.conv1"], "residual": None})
        add_layer(f"{name}.conv2", blk.conv2, blk.bn2, f"{name}.h")
        layers = [f"{name}.conv2"]
        residual = cur
        if blk.downsample is not None:
            ds = list(blk.downsample)
            add_layer(f"{name}.downsample.0", ds[0], ds[1], cur)
            layers.append(f"{name}.downsample.0")
            residual = None
        op_list.append({"op": "glue", "name": f"{name}.bn2", "output": f"{name}.out",
                        "layers": layers, "residual": residual,
                        "residual_view": None if residual is None else residual_view(residual)})
        cur = f"{name}.out"
    g, b, m = _bn_affine(model.bn2)
    arrays["head.weight"] = model.fc.weight.data.reshape(model.fc.weight.data.shape[0], -1) \
        .astype(np.float32)
    arrays["head.scale"] = g
    arrays["head.shift"] = b - g * m
    op_list.append({"op": "head", "input": last, "view": residual_view(last)})

    for t, s in scales.items():
        arrays[f"{t}.scales"] = np.asarray(s, np.float64)
        arrays[f"{t}.vmax"] = np.asarray(vmaxes[t], np.int32)
        tensors[t] = {"channels": int(acts[t].shape[1]), "views": len(s)}

    graph = {"format": FORMAT, "version": VERSION, "arch": "resnet_cifar",
             "num_classes": int(model.num_classes), "bits": bits, "scheme": scheme,
             "groups": groups if scheme == "grouped" else 1, "act_percentile": act_percentile,
             "bias_correction": bool(bias_correction), "glue": glue,
             "residual_bits": residual_bits,
             "code_dtype": dt.name, "tensors": tensors, "ops": []}
    qm = QuantizedModel(arrays, graph)

    # sequential pass: fill in each glue op (bias correction needs the quantised S/E)
    env = {}
    for op in op_list:
        if op["op"] == "glue":
            op = _finish_glue(op, qm, env, layer_info, layer_terms, dmean, scales,
                              bias_correction)
        graph["ops"].append(op)
        qm.run_op(op, env, calib_images)
    return qm


def _finish_glue(op, qm, env, layer_info, layer_terms, dmean, scales, bias_correction):
    """Compute a glue op's alpha/beta (with the bias correction from the quantised sums in
    ``env``) and its fixed-point form; returns the op as stored in the graph."""
    name = op["name"]
    srcs, alphas, beta = [], [], 0.0
    for lname in op["layers"]:
        s_terms, a_terms, g, b, m = layer_terms(lname)
        info = layer_info[lname]
        # mean quantised distance D_q ≈ Σ|x − F'| per channel (real units)
        s = env[f"{lname}.S"].astype(np.float64)
        dq = s.mean(axis=(0, 1, 2)) * info["rg"]
        if info["grouped"]:
            e = env[f"{lname}.E"][..., qm.arrays[f"{lname}.group"]].astype(np.float64)
            dq = dq + e.mean(axis=(0, 1, 2)) * info["r"]
        # Y_q − Y_f = −(D_q + C) + D_f: its mean moves into the BN mean
        err = (dmean[lname] - dq - info["C"]) if bias_correction else 0.0
        mean_eff = m + info["C"] + err
        srcs += s_terms
        alphas += a_terms
        beta = beta + b - g * mean_eff
    if op["residual"] is not None:
        v = op["residual_view"]
        srcs.append({"kind": "codes", "of": op["residual"], "view": v})
        r_in = scales[op["residual"]][v]
        alphas.append(np.full_like(alphas[0], r_in))
    alpha = np.stack(alphas)
    beta = np.asarray(beta, np.float64) * np.ones(alpha.shape[1])
    a = qm.arrays
    a[f"{name}.alpha"] = alpha
    a[f"{name}.beta"] = beta
    out_scales = scales[op["output"]]
    fixed = [_fixed_point(alpha, beta, s) for s in out_scales]
    a[f"{name}.mult"] = np.stack([f[0] for f in fixed])
    a[f"{name}.bias"] = np.stack([f[1] for f in fixed])
    a[f"{name}.shift"] = np.asarray([f[2] for f in fixed], np.int32)
    return {"op": "glue", "name": name, "output": op["output"], "sources": srcs}
