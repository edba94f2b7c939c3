"""PyTorch's module and optimiser contracts: Parameter registered by type, frozen parameters,
the adaptive per-layer scaling following its layer, Tensor dtype promotion, narrow ResNets,
load_state_dict's advice, the adder -> ReLU warning and the public buffer API."""
import math
import operator
import warnings

import numpy as np
import pytest

from addercore import Tensor, functional as F, nn, no_grad, optim
from addercore.models import ResNetCIFAR, resnet20
from addercore.nn import layers as nn_layers

RNG = np.random.default_rng(11)


# --------------------------------------------------------------------------------------------
# Parameter
# --------------------------------------------------------------------------------------------
def test_parameter_is_a_leaf_tensor_copy():
    values = np.arange(6.0).reshape(2, 3)
    p = nn.Parameter(values)
    assert isinstance(p, Tensor) and p.requires_grad and p.adaptive_eta is None
    values[0, 0] = 99.0  # copied, not shared
    np.testing.assert_array_equal(p.data, np.arange(6.0).reshape(2, 3))
    frozen = nn.Parameter(np.ones(2, np.float32), requires_grad=False)
    assert not frozen.requires_grad and frozen.dtype == np.float32
    assert repr(frozen) == "Parameter(shape=(2,), dtype=float32, requires_grad=False)"
    # op outputs are plain Tensors, never Parameters
    assert type(p * 2.0) is Tensor and type(F.relu(p)) is Tensor


def test_parameter_refuses_a_non_leaf_tensor():
    w = nn.Parameter(np.ones(3))
    y = w * 2.0
    with pytest.raises(ValueError, match="non-leaf.*detach"):
        nn.Parameter(y)
    q = nn.Parameter(y.detach())
    np.testing.assert_array_equal(q.data, [2.0, 2.0, 2.0])
    with pytest.raises(TypeError, match="requires_grad must be a bool"):
        nn.Parameter(np.ones(3), "name")  # the name is keyword-only


class Cache(nn.Module):
    """A module that caches its output in forward and holds a plain Tensor that needs a grad."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(np.array([1.0, -2.0, 3.0]))
        self.scale = Tensor(np.array(2.0), requires_grad=True)  # plain Tensor: not registered

    def forward(self, x):
        self.last = x * self.weight
        return self.last


def test_registration_is_by_type():
    m = Cache()
    m(np.ones(3)).sum().backward()
    assert isinstance(m.last, Tensor) and m.last.requires_grad  # cached, non-leaf
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    assert list(m.state_dict()) == ["weight"]
    opt = optim.SGD(m.parameters(), lr=0.5)
    assert opt.params == [m.weight]
    opt.step()
    np.testing.assert_array_equal(m.weight.data, [0.5, -2.5, 2.5])  # d(sum x*w)/dw = x = 1


def test_assigning_to_a_parameter_name():
    conv = nn.Conv2d(2, 3, 1, rng=np.random.default_rng(0))
    # a plain Tensor (leaf or not) or an array cannot replace a parameter
    for value in (Tensor(np.zeros((3, 2, 1, 1))), Tensor(np.zeros((3, 2, 1, 1))) * 1.0,
                  np.zeros((3, 2, 1, 1))):
        with pytest.raises(TypeError, match="parameter 'weight' of Conv2d.*Parameter"):
            conv.weight = value
    with pytest.raises(TypeError, match="expected a Parameter"):
        conv.register_parameter("extra", Tensor(np.zeros(2), requires_grad=True))
    # a new Parameter keeps the key's place (PyTorch's order), so checkpoints stay loadable
    new = nn.Parameter(np.full((3, 2, 1, 1), 0.5, np.float32))
    conv.weight = new
    assert list(conv.state_dict()) == ["weight", "bias"]
    assert conv.parameters() == [new, conv.bias]
    conv.bias = None  # None drops it, as before
    assert list(conv.state_dict()) == ["weight"]
    x = RNG.standard_normal((1, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(conv(x).data, np.broadcast_to(0.5 * x.sum(1, keepdims=True),
                                                             (1, 3, 2, 2)), rtol=1e-6)


def test_frozen_parameter_stays_in_state_dict_and_is_not_optimised():
    bn = nn.BatchNorm2d(2)
    bn.weight.requires_grad = False
    assert list(bn.state_dict())[:2] == ["weight", "bias"]
    assert bn.parameters() == [bn.weight, bn.bias]
    # frozen from the start (assigned after freezing) also stays
    m = nn.Module()
    m.w = nn.Parameter(np.ones(2), requires_grad=False)
    assert list(m.state_dict()) == ["w"]
    m.load_state_dict({"w": np.array([3.0, 4.0])})
    np.testing.assert_array_equal(m.w.data, [3.0, 4.0])

    x = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bn(x).sum().backward()
    assert bn.weight.grad is None and bn.bias.grad is not None
    bn.weight.grad = np.ones(2, np.float32)  # even a stale gradient is not applied
    before_w, before_b = bn.weight.data.copy(), bn.bias.data.copy()
    optim.SGD(bn.parameters(), lr=0.1, weight_decay=0.1).step()
    np.testing.assert_array_equal(bn.weight.data, before_w)
    np.testing.assert_array_equal(bn.bias.data, before_b - np.float32(0.1) * bn.bias.grad)


def test_sgd_refuses_non_tensors():
    with pytest.raises(TypeError, match=r"params\[1\] must be a Tensor"):
        optim.SGD([nn.Parameter(np.ones(2)), np.ones(2)], lr=0.1)


# --------------------------------------------------------------------------------------------
# Adaptive per-layer scaling follows the layer
# --------------------------------------------------------------------------------------------
def _adder(eta=0.2, dtype=np.float64):
    return nn.Adder2d(2, 3, 3, eta=eta, rng=np.random.default_rng(4), dtype=dtype)


def _step(layer, grad, opt=None, **sgd):
    """One SGD step (lr 1) on the layer's filter with gradient ``grad``; returns w0 - w1."""
    w0 = layer.adder.data.copy()
    layer.adder.grad = grad.astype(layer.adder.dtype)
    (opt or optim.SGD(layer.parameters(), lr=1.0, **sgd)).step()
    return w0 - layer.adder.data


def _scaled(grad, eta):
    """η·sqrt(k)·g/‖g‖₂ (method §5.1) in float64."""
    g = grad.astype(np.float64)
    return eta * math.sqrt(g.size) * g / np.sqrt(np.sum(g * g))


GRAD = RNG.standard_normal((3, 2, 3, 3)) * 40.0


def test_scaling_from_the_constructor():
    np.testing.assert_allclose(_step(_adder(0.4), GRAD), _scaled(GRAD, 0.4), rtol=1e-12)
    np.testing.assert_allclose(_step(_adder(None), GRAD), GRAD, rtol=1e-12)


def test_scaling_follows_eta_assignment():
    layer = _adder(0.2)
    opt = optim.SGD(layer.parameters(), lr=1.0)  # built before the change: reads at step time
    layer.eta = 0.4
    np.testing.assert_allclose(_step(layer, GRAD, opt), _scaled(GRAD, 0.4), rtol=1e-12)
    layer.eta = None
    np.testing.assert_allclose(_step(layer, GRAD, opt), GRAD, rtol=1e-12)
    layer.eta = 0.1
    np.testing.assert_allclose(_step(layer, GRAD, opt), _scaled(GRAD, 0.1), rtol=1e-12)
    for bad in (0, -1.0, True, "0.2", float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta must be a positive number or None"):
            layer.eta = bad
    assert layer.eta == 0.1 and layer.adder.adaptive_eta == 0.1


def test_scaling_follows_a_new_filter_parameter():
    layer = _adder(0.2)
    layer.adder = nn.Parameter(RNG.standard_normal((3, 2, 3, 3)))
    assert [n for n, _ in layer.named_parameters()] == ["adder"]
    np.testing.assert_allclose(_step(layer, GRAD), _scaled(GRAD, 0.2), rtol=1e-12)
    layer.eta = None
    layer.adder = nn.Parameter(RNG.standard_normal((3, 2, 3, 3)))
    np.testing.assert_allclose(_step(layer, GRAD), GRAD, rtol=1e-12)


def test_scaling_survives_load_state_dict_and_to():
    source = _adder(0.2)
    target = _adder(0.4)  # eta is the layer's, not the checkpoint's
    source.adder.data[...] = RNG.standard_normal((3, 2, 3, 3))
    opt = optim.SGD(target.parameters(), lr=1.0)
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target.adder.data, source.adder.data)
    np.testing.assert_allclose(_step(target, GRAD, opt), _scaled(GRAD, 0.4), rtol=1e-12)

    layer = _adder(0.3, dtype=np.float32)
    opt = optim.SGD(layer.parameters(), lr=1.0)
    layer.to(np.float64)
    assert layer.adder.dtype == np.float64
    np.testing.assert_allclose(_step(layer, GRAD, opt), _scaled(GRAD, 0.3), rtol=1e-12)


def test_optimizer_override_and_switch():
    np.testing.assert_allclose(_step(_adder(0.2), GRAD, eta=0.5), _scaled(GRAD, 0.5), rtol=1e-12)
    # a layer with eta=None stays plain under the override; adaptive_scaling=False turns all off
    np.testing.assert_allclose(_step(_adder(None), GRAD, eta=0.5), GRAD, rtol=1e-12)
    np.testing.assert_allclose(_step(_adder(0.2), GRAD, adaptive_scaling=False), GRAD,
                               rtol=1e-12)


def test_scaling_follows_layers_inside_a_model():
    model = nn.Sequential(_adder(0.2), nn.BatchNorm2d(3, dtype=np.float64),
                          nn.Conv2d(3, 3, 1, bias=False, dtype=np.float64))
    model[0].eta = 0.4
    w0 = model[0].adder.data.copy()
    c0 = model[2].weight.data.copy()
    model[0].adder.grad = GRAD.copy()
    gc = RNG.standard_normal((3, 3, 1, 1)) * 40.0
    model[2].weight.grad = gc.copy()
    optim.SGD(model.parameters(), lr=1.0).step()
    np.testing.assert_allclose(w0 - model[0].adder.data, _scaled(GRAD, 0.4), rtol=1e-12)
    np.testing.assert_allclose(c0 - model[2].weight.data, gc, rtol=1e-12)  # never rescaled


# --------------------------------------------------------------------------------------------
# Tensor dtype promotion: numpy's rule for every binary op, both operand orders
# --------------------------------------------------------------------------------------------
OPS = [operator.add, operator.sub, operator.mul]
OTHERS = {
    "f64 array": lambda: RNG.standard_normal(3),
    "f32 array": lambda: RNG.standard_normal(3).astype(np.float32),
    "f64 0-d array": lambda: np.array(1.5),
    "f64 Tensor": lambda: Tensor(RNG.standard_normal(3)),
    "f32 Tensor": lambda: Tensor(RNG.standard_normal(3).astype(np.float32)),
    "int64 array": lambda: np.arange(3),
    "np.float64": lambda: np.float64(1.5),
    "np.float32": lambda: np.float32(1.5),
    "python float": lambda: 1.5,
    "python int": lambda: 3,
    "python bool": lambda: True,
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("other_kind", sorted(OTHERS))
@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__)
def test_binary_ops_promote_as_numpy(op, other_kind, dtype):
    t = Tensor(RNG.standard_normal(3).astype(dtype), requires_grad=True)
    other = OTHERS[other_kind]()
    raw = other.data if isinstance(other, Tensor) else other
    for result, expected in ((op(t, other), op(t.data, raw)), (op(other, t), op(raw, t.data))):
        assert type(result) is Tensor
        assert result.dtype == expected.dtype, (other_kind, op.__name__)
        np.testing.assert_array_equal(result.data, expected)
        result.sum().backward()
        assert t.grad.dtype == t.dtype
        t.grad = None


def test_python_scalars_keep_float32():
    t = Tensor(np.ones(2, np.float32))
    for value in (t + 2.0, 2.0 + t, t - 2.0, 2.0 - t, t * 2.0, 2.0 * t, t * 2, -t):
        assert value.dtype == np.float32


# --------------------------------------------------------------------------------------------
# ResNetCIFAR widths
# --------------------------------------------------------------------------------------------
def test_resnet_widths():
    narrow = ResNetCIFAR((1, 2, 1), widths=(4, 8, 16), rng=np.random.default_rng(0))
    full = ResNetCIFAR((1, 2, 1), rng=np.random.default_rng(0))
    sd_n, sd_f = narrow.state_dict(), full.state_dict()
    assert list(sd_n) == list(sd_f)
    assert sd_n["conv1.weight"].shape == (4, 3, 3, 3)
    assert sd_n["layer2.0.downsample.0.adder"].shape == (8, 4, 1, 1)
    assert sd_n["layer3.0.conv2.adder"].shape == (16, 16, 3, 3)
    assert sd_n["fc.weight"].shape == (10, 16, 1, 1)
    assert narrow(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    # the paper's widths, given explicitly, are the default model bit for bit
    explicit = ResNetCIFAR((3, 3, 3), widths=(16, 32, 64), rng=np.random.default_rng(1))
    default = resnet20(rng=np.random.default_rng(1))
    for (ka, va), (kb, vb) in zip(explicit.state_dict().items(), default.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)
    for bad in ((4, 8), (4, 0, 16), (4, 8.0, 16), "abc"):
        with pytest.raises(ValueError, match="widths must be 3 positive ints"):
            ResNetCIFAR((1, 1, 1), widths=bad)


# --------------------------------------------------------------------------------------------
# load_state_dict's advice
# --------------------------------------------------------------------------------------------
def test_load_state_dict_module_prefix_is_explained_briefly():
    model = resnet20(rng=np.random.default_rng(0))
    state = {"module." + k: v for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        model.load_state_dict(state)
    text = str(err.value)
    n = len(state)
    assert f"missing keys: {n} (conv1.weight, bn1.weight," in text
    assert f"unexpected keys: {n} (module.conv1.weight," in text and f"({n - 5} more)" in text
    assert "strip_prefix(state, 'module.')" in text
    assert len(text) < 1000 < len(", ".join(state))
    with pytest.warns(UserWarning, match="loads nothing.*strip_prefix"):
        missing, unexpected = model.load_state_dict(state, strict=False)
    assert len(missing) == len(unexpected) == n


def test_load_state_dict_names_the_other_kind():
    cnn = ResNetCIFAR((1, 1, 1), kind="cnn", rng=np.random.default_rng(0))
    adder = ResNetCIFAR((1, 1, 1), kind="adder", rng=np.random.default_rng(0))
    # 8 replaceable layers: two per block, three blocks, and the shortcuts of stages 2 and 3
    with pytest.raises(ValueError, match="8 adder filters.*kind='cnn'"):
        adder.load_state_dict(cnn.state_dict())
    with pytest.raises(ValueError, match="8 '.weight' keys are adder filters.*kind='adder'"):
        cnn.load_state_dict(adder.state_dict())


# --------------------------------------------------------------------------------------------
# Adder -> ReLU without BatchNorm
# --------------------------------------------------------------------------------------------
def test_relu_directly_after_adder_warns_once(monkeypatch):
    monkeypatch.setattr(nn_layers, "_warned_relu_after_adder", False)
    x = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    good = nn.Sequential(nn.Adder2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    bad = nn.Sequential(nn.Adder2d(2, 3, 3), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good(x)
        with no_grad():
            bad.eval()(x)  # inference: no graph, no check
    bad.train()
    with pytest.warns(UserWarning, match="adder layer's output.*BatchNorm2d") as record:
        y = bad(x)
    assert len(record) == 1
    np.testing.assert_array_equal(y.data, 0.0)  # the reason: adder outputs are <= 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bad(x)  # once
    # through pooling too (max/avg pooling keep adder outputs <= 0)
    monkeypatch.setattr(nn_layers, "_warned_relu_after_adder", False)
    pooled = nn.Sequential(nn.Adder2d(2, 3, 3), nn.MaxPool2d(2), nn.ReLU())
    with pytest.warns(UserWarning, match="adder layer's output"):
        pooled(x)


# --------------------------------------------------------------------------------------------
# Public buffer API (snapshot and restore, as the trainer does around a skipped batch)
# --------------------------------------------------------------------------------------------
def test_buffers_snapshot_and_restore():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    assert [n for n, _ in model.named_buffers()] == [
        "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert list(model.named_buffers(recurse=False)) == []
    assert [n for n, _ in model[1].named_parameters(recurse=False)] == ["weight", "bias"]
    assert len(model.buffers()) == 3
    saved = [(m, n, np.array(b, copy=True)) for m in model.modules()
             for n, b in m.named_buffers(recurse=False) if b is not None]
    model(RNG.standard_normal((4, 2, 3, 3)).astype(np.float32))
    assert int(model[1].num_batches_tracked) == 1
    for m, n, b in saved:
        setattr(m, n, b)
    np.testing.assert_array_equal(model[1].running_mean, np.zeros(3))
    np.testing.assert_array_equal(model[1].running_var, np.ones(3))
    assert int(model[1].num_batches_tracked) == 0
    assert model.state_dict()["1.running_var"] is not model[1].running_var  # still a buffer
    assert [n for n, _ in model.named_buffers()][0] == "1.running_mean"
