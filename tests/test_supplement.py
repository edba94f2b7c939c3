"""The supplement's claims as tests: the Eq. 15 ℓ2 path and the sign filter gradient of the
Table 1 ablation. (Propositions 1-2 are in tests/test_engine_nn_optim.py.)"""
import numpy as np
import pytest

from addercore import ops
from addercore.ops import reference
from addercore.ops.l2_identity import adder2d_l2_forward, l2_rounding_bound
from addercore.train import TrainConfig, build_model
from addercore import functional as F
from addercore import nn
from addercore.tensor import Tensor

from conftest import shared_data_path

# (x shape, filter shape, stride, padding): stride 1 and 2, with and without padding,
# non-square kernels/strides/padding, a 1×1 shortcut, a kernel as large as the padded input.
SHAPES = [
    ((2, 16, 8, 8), (32, 16, 3, 3), 1, 1),
    ((2, 16, 9, 9), (32, 16, 3, 3), 2, 1),
    ((3, 5, 7, 6), (4, 5, 1, 1), 2, 0),
    ((1, 3, 6, 7), (2, 3, 3, 2), (2, 1), (1, 2)),
    ((2, 4, 3, 3), (3, 4, 5, 5), 1, 1),
    ((1, 64, 8, 8), (64, 64, 3, 3), 1, 1),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding", SHAPES)
def test_eq15_equals_direct_l2_within_rounding(dtype, xs, ws, stride, padding):
    # Tolerance: l2_rounding_bound, 2·(K + 2)·ε·(ΣXp² + ΣF² + 2Σ|Xp·F|) per output — the
    # first-order error bound of recursive summation of K terms (Higham §3.1) for each method,
    # on the magnitudes the identity cancels. Eq. 15 subtracts terms of size ΣXp² + ΣF² to get
    # Σ(Xp − F)², so its error is relative to those sums, not to |y|.
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    y_conv = adder2d_l2_forward(x, w, stride, padding, method="conv")
    y_direct = ops.adder2d_forward(x, w, stride, padding, norm="l2")
    exact = reference.adder2d_forward(x.astype(np.float64), w.astype(np.float64),
                                      _pair(stride), _pair(padding), "l2")
    bound = l2_rounding_bound(x, w, stride, padding)
    assert y_conv.dtype == dtype and y_conv.shape == exact.shape
    assert np.all(np.abs(y_conv.astype(np.float64) - y_direct) <= bound)
    assert np.all(np.abs(y_conv - exact) <= bound)
    # the tolerance is tight: K·ε-relative to the values (in float64 far below any padding or
    # sign mistake: a padded tap's F² is ~1 here; float32's padding is checked exactly below)
    k = np.prod(ws[1:])
    assert bound.max() <= 1e3 * k * np.finfo(dtype).eps * np.abs(exact).max()
    if dtype == np.float64:
        assert bound.max() < 1e-9
    # "direct" is the direct kernel itself
    np.testing.assert_array_equal(adder2d_l2_forward(x, w, stride, padding, method="direct"),
                                  y_direct)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eq15_padding_counts_padded_taps_as_zeros(dtype):
    # hand-computed: a 1×1 input 3 padded to 3×3, filter of 2s: the centre tap gives
    # (3 - 2)² = 1, the 8 padded taps (0 - 2)² = 4 each -> y = -(1 + 32) = -33
    x = np.full((1, 1, 1, 1), 3.0, dtype=dtype)
    w = np.full((1, 1, 3, 3), 2.0, dtype=dtype)
    for method in ("conv", "direct"):
        y = adder2d_l2_forward(x, w, 1, 1, method=method)
        np.testing.assert_array_equal(y, np.full((1, 1, 1, 1), -33.0, dtype=dtype))


def test_eq15_bad_arguments():
    x = np.zeros((1, 2, 4, 4), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="method"):
        adder2d_l2_forward(x, w, method="gemm")
    with pytest.raises(TypeError, match="dtype"):
        adder2d_l2_forward(x, w.astype(np.float64), method="conv")
    with pytest.raises(ValueError, match="channels"):
        adder2d_l2_forward(x, np.zeros((3, 5, 3, 3), np.float32), method="conv")
    with pytest.raises(ValueError, match="larger than the padded input"):
        adder2d_l2_forward(x, np.zeros((3, 2, 5, 5), np.float32), method="conv")


def test_eq15_on_real_resnet20_activations():
    # the authors' checkpoint on 4 real CIFAR-10 test images; the input of the stride-2,
    # padded layer2.0.conv1 (see benchmarks/bench_l2_identity.py for all layers)
    ckpt = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    data = shared_data_path("cifar-10-batches-py")
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_l2_identity import capture_inputs
    x64, w64, s, p = capture_inputs(ckpt, data, 4, layers=("layer2.0.conv1",))["layer2.0.conv1"]
    assert s == (2, 2) and p == (1, 1) and x64.shape == (4, 16, 32, 32)
    exact = reference.adder2d_forward(x64, w64, s, p, "l2")
    for dt in (np.float64, np.float32):
        x, w = x64.astype(dt), w64.astype(dt)
        y = adder2d_l2_forward(x, w, s, p, method="conv")
        assert np.all(np.abs(y - exact) <= l2_rounding_bound(x, w, s, p))
    # real activations are non-negative (after ReLU) and the outputs are large
    assert x64.min() >= 0 and np.abs(exact).max() > 1e3


# --------------------------------------------------------------------------------------------
# --filter-grad sign (TrainConfig(filter_grad="sign"), the supplement's Table 1 ablation)
# --------------------------------------------------------------------------------------------
def _layer_grad(filter_grad, layer="layer2.0.conv1"):
    """Build ResNet-20 through build_model, run one forward/backward on a seeded batch and
    return (the layer's raw filter gradient, its input X, its output gradient G, its filters,
    stride, padding, the model)."""
    cfg = TrainConfig(filter_grad=filter_grad, seed=3, dtype="float64")
    model = build_model(cfg)
    mod = dict(model.named_modules())[layer]
    seen = {}

    def hook(t, orig=mod.forward):
        seen["x"] = np.array(t.data)
        y = orig(t)

        def probe_backward(g):  # records ∂L/∂Y of this layer and passes it on
            seen["g"] = np.array(g)
            y._accumulate(g)
        return Tensor._from_op(y.data, (y,), probe_backward, "probe")
    object.__setattr__(mod, "forward", hook)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 3, 32, 32))
    labels = rng.integers(0, 10, 3)
    model.train()
    loss = F.cross_entropy(model(x), labels)
    loss.backward()
    return (mod.adder.grad.copy(), seen["x"], seen["g"], mod.adder.data, mod.stride,
            mod.padding, model)


def _filter_grad_reference(x, w, g, stride, padding, sign):
    """Σ_{n,h,w} D·G or Σ sgn(D)·G, D = Xp_patch - F, in float64 numpy loops over taps."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    ho, wo = g.shape[2:]
    out = np.zeros_like(w)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            patch = xp[:, :, i:i + stride[0] * ho:stride[0], j:j + stride[1] * wo:stride[1]]
            d = patch[:, None] - w[None, :, :, i, j, None, None]      # (N, Cout, Cin, Ho, Wo)
            d = np.sign(d) if sign else d
            out[:, :, i, j] = np.einsum("ntchw,nthw->tc", d, g)
    return out


def test_filter_grad_sign_changes_the_filter_gradient_in_build_model():
    g_sign, x, g, w, s, p, model = _layer_grad("sign")
    assert all(m.filter_grad == "sign" for m in model.modules() if isinstance(m, nn.Adder2d))
    assert sum(isinstance(m, nn.Adder2d) for m in model.modules()) == 20  # 18 + 2 shortcuts
    ref_sign = _filter_grad_reference(x, w, g, s, p, sign=True)
    np.testing.assert_allclose(g_sign, ref_sign, rtol=1e-10, atol=1e-12 * np.abs(ref_sign).max())

    g_full, x2, gg2, w2, _, _, model_full = _layer_grad("full")
    assert all(m.filter_grad == "full" for m in model_full.modules()
               if isinstance(m, nn.Adder2d))
    np.testing.assert_array_equal(w2, w)  # same seed, same filters
    ref_full = _filter_grad_reference(x2, w2, gg2, s, p, sign=False)
    np.testing.assert_allclose(g_full, ref_full, rtol=1e-10, atol=1e-12 * np.abs(ref_full).max())
    # and the two really differ: the sign gradient is not a rescaled full gradient
    cos = np.sum(g_sign * g_full) / (np.linalg.norm(g_sign) * np.linalg.norm(g_full))
    assert cos < 0.99
    assert np.abs(g_sign - g_full).max() > 0.1 * np.abs(g_full).max()


# --------------------------------------------------------------------------------------------
# docs/results/make_supplement.py with runs in progress
# --------------------------------------------------------------------------------------------
def _load_make_supplement():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "make_supplement.py"
    spec = importlib.util.spec_from_file_location("make_supplement", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_supplement_table_marks_unfinished_runs(tmp_path, monkeypatch):
    import json
    ms = _load_make_supplement()
    # count_ops itself is tested in test_profile.py; here only the table logic
    monkeypatch.setattr(ms, "body_ops", lambda kind, norm: ((0, 2), (0, 4), (1, 4)))

    def write(folder, accs, epochs=10, partial_line=False):
        d = tmp_path / folder
        d.mkdir()
        (d / "command.sh").write_text(f"python examples/train_cifar.py --epochs {epochs} --out x\n")
        lines = [json.dumps({"epoch": e + 1, "test_acc": a, "train_acc": a + 0.01})
                 for e, a in enumerate(accs)]
        text = "\n".join(lines) + "\n" + ('{"epoch": 9, "test_a' if partial_line else "")
        (d / "metrics.jsonl").write_text(text)
    write("resnet20_cnn_cifar10", [0.5, 0.7, 0.6], epochs=3)
    write("resnet20_adder_l2_cifar10", [0.2, 0.4], partial_line=True)  # being written
    write("resnet20_adder_cifar10", [0.1] * 10)
    # the sign run has not finished an epoch: no metrics.jsonl yet
    (tmp_path / "resnet20_adder_sign_cifar10").mkdir()
    runs = ms.collect(tmp_path)
    assert [r["done"] for r in runs] == [3, 2, 10, 0]
    assert [r["finished"] for r in runs] == [True, False, True, False]
    lines = ms.table(runs).splitlines()
    assert len(lines) == 6 and "BN re-estimation" not in lines[0]
    assert lines[2].split(" | ")[1:2] == ["3/3"]
    assert "60.00% | 70.00% (2) | 61.00%" in lines[2]          # final, best (epoch), train
    assert "**2/10, run in progress**" in lines[3] and "40.00% | 40.00% (2) | 41.00%" in lines[3]
    assert "**0/10, run in progress**" in lines[5] and lines[5].endswith("– | – | – |")
    # a BN re-estimation result adds the column
    (tmp_path / "resnet20_adder_cifar10" / "bn_reestimated.json").write_text('{"test_acc": 0.25}')
    lines = ms.table(ms.collect(tmp_path)).splitlines()
    assert "BN re-estimation" in lines[0] and lines[4].endswith("| 25.00% |")
    assert lines[2].endswith("| – |")
    if ms.figure(runs, tmp_path / "curves.png"):
        assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# examples/propositions.py (Propositions 1-2 in n dimensions)
# --------------------------------------------------------------------------------------------
def test_propositions_example_in_many_dimensions(tmp_path):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "propositions.py"
    spec = importlib.util.spec_from_file_location("propositions", path)
    prop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prop)
    lr, steps, n = 0.3, 40, 1000
    x = np.random.default_rng(5).standard_normal((1, n, 1, 1))   # the x minimise() draws
    d0 = np.abs(x).sum()
    full = prop.minimise(n, "full", lr, steps, seed=5)
    sign = prop.minimise(n, "sign", lr, steps, seed=5)
    assert full[0] == sign[0] == d0
    # full precision: every coordinate's distance shrinks by (1 - lr) per step (exactly, up to
    # the rounding of f near x: absolute error ~ε·|x|, so relative error grows as it shrinks)
    np.testing.assert_allclose(full, d0 * (1 - lr) ** np.arange(steps + 1), rtol=1e-9)
    # sign: once every |x_k| has been walked off (max |x_k| < 4 -> 14 steps), each coordinate
    # alternates between a_k and lr - a_k: the total distance per dimension stays in (0, lr)
    # and two steps apart it repeats exactly (period 2, no convergence)
    assert np.abs(x).max() < 14 * lr
    tail = sign[15:] / n
    assert np.all((tail > 0.05) & (tail < lr))
    np.testing.assert_allclose(sign[17:], sign[15:-2], rtol=1e-12)
    assert sign[-1] > 1e5 * full[-1]  # 0.7^40 = 6e-7
    # the CSV has one row per gradient, n and iteration, and round-trips the distances
    res = prop.run([1, 10], lr, 5, seed=0)
    rows = prop.to_csv(res).splitlines()
    assert rows[0] == "gradient,n,iteration,distance,mean_distance" and len(rows) == 1 + 2 * 2 * 6
    g, nn_, t, dist, mean = rows[-1].split(",")
    assert (g, int(nn_), int(t)) == ("full", 10, 5)
    assert float(dist) == res[("full", 10)][5] and float(mean) == res[("full", 10)][5] / 10
    # refuses to replace existing outputs without --force
    (tmp_path / "propositions.csv").write_text("mine")
    with pytest.raises(SystemExit):
        prop.main(["--out-dir", str(tmp_path), "--steps", "3", "--dims", "1"])
    assert (tmp_path / "propositions.csv").read_text() == "mine"
    assert prop.main(["--out-dir", str(tmp_path), "--steps", "3", "--dims", "1", "--force"]) == 0
    assert (tmp_path / "propositions.csv").read_text().count("\n") == 1 + 2 * 4
