"""Post-training quantisation: the clamp+fold identity, the integer model against an
independent float re-computation, the file format, bad input, and (slow) the released
ResNet-20's 8-bit accuracy on the first 1,000 test images."""
import json
import os
import zipfile

import numpy as np
import pytest

import addercore
from addercore import nn, ops
from addercore.models.resnet_cifar import ResNetCIFAR
from addercore.quant import fold_weight_clamp, load, quantize, save
from addercore.quant.model import QuantizedModel

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
CKPT = os.path.join(DATA, "pretrained", "ResNet20-AdderNet.pth")
CIFAR = os.path.join(DATA, "cifar-10-batches-py")


def _small_model(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    m = ResNetCIFAR((1, 1, 1), 10, kind="adder", dtype=dtype, rng=rng)
    for mod in m.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.data[...] = rng.uniform(0.5, 1.5, c)
            mod.bias.data[...] = rng.uniform(-0.5, 0.5, c)
            mod.running_mean[...] = rng.uniform(-30, -5, c)
            mod.running_var[...] = rng.uniform(20, 60, c)
    m.eval()
    return m


def _images(n, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(dtype)


# ---------------------------------------------------------------------------------------------
def test_clamp_fold_identity_single_layer_float64():
    rng = np.random.default_rng(3)
    layer = nn.Adder2d(4, 6, 3, padding=1, dtype=np.float64, rng=rng)
    layer.adder.data[...] = 2.0 * rng.standard_normal(layer.adder.data.shape)
    bn = nn.BatchNorm2d(6, dtype=np.float64)
    bn.running_mean[...] = rng.uniform(-40, -10, 6)
    bn.running_var[...] = rng.uniform(1, 5, 6)
    bn.eval()
    x = rng.uniform(0.0, 2.0, (3, 4, 7, 5))  # inputs inside [0, hi], padded zeros too
    with addercore.no_grad():
        before = bn(layer(addercore.Tensor(x))).data
        f = layer.adder.data.copy()
        c = fold_weight_clamp(layer, bn, 0.0, 2.0)
        after = bn(layer(addercore.Tensor(x))).data
    # the clamp really changed filters, and C is Σ of the clipped amounts (hand formula)
    assert np.any(f != layer.adder.data) and layer.adder.data.min() >= 0
    want_c = (np.maximum(f - 2.0, 0) + np.maximum(-f, 0)).sum(axis=(1, 2, 3))
    assert np.array_equal(c, want_c)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)


def test_clamp_fold_identity_whole_network_float64():
    m = _small_model(np.float64)
    x = _images(4, dtype=np.float64)
    with addercore.no_grad():
        before = m(addercore.Tensor(x)).data
    # each layer clamped to [0, max of its actual input on these images]: exact per layer
    from addercore.quant.calibrate import _float_pass, _structure

    acts, _, _ = _float_pass(m, _structure(m), x)
    for name, blk in _structure(m):
        inp = "stem" if name == "layer1.0" else None
        prev = {"layer1.0": "stem", "layer2.0": "layer1.0.out", "layer3.0": "layer2.0.out"}[name]
        fold_weight_clamp(blk.conv1, blk.bn1, 0.0, float(acts[prev].max()))
        fold_weight_clamp(blk.conv2, blk.bn2, 0.0, float(acts[f"{name}.h"].max()))
        if blk.downsample is not None:
            ds = list(blk.downsample)
            fold_weight_clamp(ds[0], ds[1], 0.0, float(acts[prev].max()))
        del inp
    with addercore.no_grad():
        after = m(addercore.Tensor(x)).data
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-9 * np.abs(before).max())


# ---------------------------------------------------------------------------------------------
def _float_recompute(q, x):
    """Independent re-computation of a QuantizedModel with float glue: float64 numpy, the
    numpy integer reference for the adder sums (NCHW), no shared code with model.py."""
    from addercore.quant.reference import adder2d_int

    a, qmax = q.arrays, q.qmax
    codes, sums = {}, {}

    def quant(u, t):
        for v, (s, vm) in enumerate(zip(a[f"{t}.scales"], a[f"{t}.vmax"])):
            codes[(t, v)] = np.clip(np.rint(u / s), 0, vm).astype(np.int64)

    for op in q.graph["ops"]:
        if op["op"] == "stem":
            y = ops.reference.conv2d_forward(x.astype(np.float32), a["stem.weight"],
                                             tuple(op["stride"]), tuple(op["padding"]))
            quant(y.astype(np.float64) * a["stem.scale"][:, None, None]
                  + a["stem.shift"][:, None, None], op["output"])
        elif op["op"] == "adder":
            n, g = op["name"], a[f"{op['name']}.group"]
            f = a[f"{n}.filters"]
            s = np.zeros(0)
            for gi, v in enumerate(a[f"{n}.views"]):
                sg = adder2d_int(codes[(op["input"], int(v))].astype(q.dtype), f, op["stride"],
                                 op["padding"])
                s = sg if gi == 0 else np.where((g == gi)[None, :, None, None], sg, s)
            sums[(n, "S")] = s
            if op["groups"] > 1:
                base = codes[(op["input"], 0)].astype(np.int64)
                e = []
                for m in a[f"{n}.limit"]:
                    ex = np.maximum(base - int(m), 0).astype(np.int32)
                    ones = np.ones((1, f.shape[1], f.shape[2], f.shape[3]), np.float64)
                    e.append(ops.reference.conv2d_forward(ex.astype(np.float64), ones,
                                                          tuple(op["stride"]),
                                                          tuple(op["padding"]))[:, 0])
                sums[(n, "E")] = np.stack(e, 1)[:, g]
        elif op["op"] == "glue":
            u = a[f"{op['name']}.beta"][:, None, None].copy()
            for k, src in enumerate(op["sources"]):
                val = codes[(src["of"], src["view"])] if src["kind"] == "codes" \
                    else sums[(src["of"], src["kind"])]
                u = u + a[f"{op['name']}.alpha"][k][:, None, None] * val
            quant(u, op["output"])
        else:
            v = op["view"]
            pooled = codes[(op["input"], v)].mean(axis=(2, 3)) * a[f"{op['input']}.scales"][v]
            return (pooled @ a["head.weight"].astype(np.float64).T) * a["head.scale"] \
                + a["head.shift"], codes
    raise AssertionError("no head op")


@pytest.mark.parametrize("scheme", ["shared", "grouped"])
@pytest.mark.parametrize("bits,residual_bits", [(4, 16), (8, None), (8, 12), (12, 16)])
def test_integer_model_matches_independent_recompute(scheme, bits, residual_bits):
    m = _small_model()
    q = quantize(m, _images(16), bits=bits, scheme=scheme, groups=3, glue="float",
                 act_percentile=99.9, residual_bits=residual_bits)
    x = _images(3, seed=7)
    trace = {}
    logits = q.forward(x, trace=trace)
    want, codes = _float_recompute(q, x)
    for (t, v), c in codes.items():  # every code tensor identical
        assert np.array_equal(trace[f"{t}.q{v}"].transpose(0, 3, 1, 2).astype(np.int64), c), (t, v)
    np.testing.assert_allclose(logits, want, rtol=1e-12, atol=1e-12)
    assert q.dtype == (np.uint8 if bits <= 8 else np.uint16)
    for op in q.graph["ops"]:
        if op["op"] == "adder":
            assert q.arrays[f"{op['name']}.filters"].max() <= 2**bits - 1


def test_fixed_point_glue_tracks_float_glue():
    m = _small_model()
    q = quantize(m, _images(16), bits=8)
    x = _images(4, seed=9)
    fixed = {}
    q.forward(x, trace=fixed)
    q.glue = "float"
    flt = {}
    q.forward(x, trace=flt)
    # fixed point rounds half up on a 2^-shift grid: codes may differ by 1 in rare ties only
    for k in fixed:
        if k.endswith(".q0") and k != "stem.q0":
            d = np.abs(fixed[k].astype(int) - flt[k].astype(int))
            assert d.max() <= 1 and d.mean() < 0.02, k


def test_quantised_float_equivalent_tracks_float_model():
    # 12-bit codes with the max range: the integer model is within a small error of float
    m = _small_model()
    x = _images(8, seed=2)
    q = quantize(m, x, bits=12, glue="float")
    with addercore.no_grad():
        ref = m(addercore.Tensor(x)).data
    out = q(x)
    assert np.abs(out - ref).max() < 0.02 * np.abs(ref).max()


# ---------------------------------------------------------------------------------------------
def test_file_round_trip_and_tamper(tmp_path):
    m = _small_model()
    q = quantize(m, _images(8), bits=6, scheme="grouped", groups=2)
    path = tmp_path / "m.npz"
    save(path, q)
    with pytest.raises(FileExistsError):
        save(path, q)
    q2 = load(path)
    x = _images(2, seed=4)
    assert np.array_equal(q2(x), q(x))
    assert q2.graph == json.loads(json.dumps(q.graph))

    # truncated
    data = path.read_bytes()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.npz"):
        load(bad)

    def edited(name, fn):
        arrays = dict(q.arrays)
        graph = json.loads(json.dumps(q.graph))
        fn(arrays, graph)
        p = tmp_path / name
        addercore.io.save(p, arrays, graph)
        return p

    cases = {
        "dtype.npz": lambda a, g: a.__setitem__("layer1.0.conv1.filters",
                                                a["layer1.0.conv1.filters"].astype(np.int16)),
        "shape.npz": lambda a, g: a.__setitem__("layer1.0.bn1.beta", a["layer1.0.bn1.beta"][:3]),
        "missing.npz": lambda a, g: a.pop("head.weight"),
        "range.npz": lambda a, g: a.__setitem__("layer1.0.conv1.filters",
                                                a["layer1.0.conv1.filters"] | np.uint8(64)),
        "version.npz": lambda a, g: g.__setitem__("version", 99),
        "format.npz": lambda a, g: g.__setitem__("format", "something-else"),
        "shift.npz": lambda a, g: a.__setitem__("layer1.0.bn1.shift",
                                                np.full_like(a["layer1.0.bn1.shift"], 70)),
    }
    for name, fn in cases.items():
        with pytest.raises(ValueError, match=name):
            load(edited(name, fn))
    # the message names only the side that is wrong
    with pytest.raises(ValueError, match=r"arrays missing \['head.weight'\]$"):
        load(edited("missing2.npz", lambda a, g: a.pop("head.weight")))
    # an integer file where float weights are expected: pointed to --quantized
    from addercore.models import resnet20
    from addercore.train import load_weights

    with pytest.raises(ValueError, match="--quantized"):
        load_weights(resnet20(10), path)


# ---------------------------------------------------------------------------------------------
def test_bad_input():
    m = _small_model()
    x = _images(4)
    with pytest.raises(ValueError, match="bits"):
        quantize(m, x, bits=1)
    with pytest.raises(ValueError, match="bits"):
        quantize(m, x, bits=17)
    with pytest.raises(ValueError, match=r"calib_images must have shape \(N >= 1, 3, 32, 32\)"):
        quantize(m, x[:, :, :16], bits=8)
    with pytest.raises(ValueError, match="calib_images"):
        quantize(m, x.transpose(0, 2, 3, 1), bits=8)
    with pytest.raises(TypeError, match="calib_images"):
        quantize(m, (x * 50).astype(np.uint8), bits=8)
    with pytest.raises(ValueError, match="scheme"):
        quantize(m, x, scheme="per-channel")
    with pytest.raises(TypeError, match="ResNetCIFAR"):
        quantize(nn.Sequential(nn.Adder2d(3, 4, 3), nn.ReLU()), x)
    cnn = ResNetCIFAR((1, 1, 1), 10, kind="cnn")
    with pytest.raises(ValueError, match="AdderNet"):
        quantize(cnn, x)
    m.layer2[0].bn1 = nn.ReLU()  # an adder layer with no BatchNorm after it
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1 must be followed by a BatchNorm2d"):
        quantize(m, x)


# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not (os.path.exists(CKPT) and os.path.isdir(CIFAR)),
                    reason="released checkpoint / CIFAR-10 not available")
def test_released_resnet20_8bit_accuracy_first_1000():
    from addercore.data.cifar import load_cifar10
    from addercore.data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize
    from addercore.quant.cli import calibration_images, load_float_model

    model = load_float_model(CKPT)
    q = quantize(model, calibration_images(CIFAR, 512, seed=0), bits=8)  # training images
    images, labels = load_cifar10(CIFAR, train=False, download=False, progress=False)
    correct_f = correct_q = 0
    for s in range(0, 1000, 250):
        x = normalize(images[s:s + 250], CIFAR10_MEAN, CIFAR10_STD)
        y = labels[s:s + 250]
        with addercore.no_grad():
            correct_f += int((model(addercore.Tensor(x)).data.argmax(1) == y).sum())
        correct_q += int((q(x).argmax(1) == y).sum())
    acc_f, acc_q = correct_f / 10.0, correct_q / 10.0
    assert acc_f > 90.0  # the checkpoint loaded correctly
    assert acc_q >= acc_f - 0.5, (acc_f, acc_q)


@pytest.mark.parametrize("scheme", ["shared", "grouped"])
def test_whole_model_compiled_equals_numpy_reference(scheme):
    # the fixed-point body is integer-only: compiled kernels (SAD + glue), 1 or 2 threads,
    # equal the numpy reference path bit for bit
    from addercore._backend import use_backend

    m = _small_model()
    q = quantize(m, _images(16), bits=6, scheme=scheme, groups=2)
    x = _images(3, seed=11)
    with use_backend("numpy"):
        ref_trace = {}
        ref = q.forward(x, trace=ref_trace)
    for threads in (1, 2):
        with addercore.num_threads(threads):
            trace = {}
            out = q.forward(x, trace=trace)
        assert trace.keys() == ref_trace.keys()
        for k in ref_trace:
            assert trace[k].dtype == ref_trace[k].dtype and np.array_equal(trace[k], ref_trace[k]), k
        assert np.array_equal(out, ref)
