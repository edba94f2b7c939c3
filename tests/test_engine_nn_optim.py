"""Autograd engine, modules and optimiser against hand-written references, plus the
convergence claims of the supplement and an end-to-end overfitting check."""
import gc
import math

import numpy as np
import pytest

import addercore
from addercore import Tensor, functional as F, nn, no_grad, ops, optim

RNG = np.random.default_rng(7)


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------
def test_backward_through_shared_node_accumulates():
    # y = relu(a) + relu(a)·2 uses relu(a) twice: gradient 3 where a > 0
    a = Tensor(np.array([-1.0, 2.0, 3.0]), requires_grad=True)
    r = F.relu(a)
    loss = (r + r * 2.0).sum()
    loss.backward()
    np.testing.assert_array_equal(a.grad, [0.0, 3.0, 3.0])


def test_graph_is_freed_and_leaf_grads_accumulate():
    w = Tensor(RNG.standard_normal((3, 4)), requires_grad=True)
    x = Tensor(RNG.standard_normal((2, 4)))
    out = F.linear(x, w).sum()
    out.backward()
    first = w.grad.copy()
    assert out._parents == () and out._backward is None and out.grad is None
    F.linear(x, w).sum().backward()
    np.testing.assert_allclose(w.grad, 2 * first)
    np.testing.assert_allclose(first, np.ones((3, 2)) @ x.data)


def test_no_grad_records_nothing():
    w = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = (w * 2.0).sum()
    assert not y.requires_grad and y._parents == ()
    assert addercore.is_grad_enabled()


def test_backward_needs_scalar_or_gradient():
    w = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="single-element"):
        (w * 2.0).backward()
    y = w * 2.0
    y.backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(w.grad, [2.0, 0.0, 4.0])


def test_broadcast_add_gradient():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones((3,)), requires_grad=True)
    (a + b).sum().backward()
    np.testing.assert_array_equal(b.grad, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(a.grad, np.ones((2, 3)))


def test_memory_flat_over_many_steps():
    import tracemalloc

    model = nn.Sequential(nn.Adder2d(2, 4, 3, padding=1, rng=np.random.default_rng(0)),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(),
                          nn.Linear(4, 3, rng=np.random.default_rng(1)))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = RNG.standard_normal((4, 2, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0])

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    gc.collect()
    tracemalloc.start()
    for _ in range(50):
        step()
    gc.collect()
    after_50, _ = tracemalloc.get_traced_memory()
    for _ in range(300):
        step()
    gc.collect()
    after_350, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after_350 - after_50 < 64 * 1024, (after_50, after_350)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Adder2d(3, 4, 3, padding=1, rng=np.random.default_rng(0))
        self.bn1 = nn.BatchNorm2d(4)
        self.downsample = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)) + self.downsample(x))


def test_state_dict_names_order_and_copies():
    m = Block()
    sd = m.state_dict()
    assert list(sd) == [
        "conv1.adder",
        "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
        "downsample.0.weight",
        "downsample.1.weight", "downsample.1.bias", "downsample.1.running_mean",
        "downsample.1.running_var", "downsample.1.num_batches_tracked",
    ]
    assert sd["bn1.num_batches_tracked"].dtype == np.int64
    sd["conv1.adder"][...] = 0  # a copy: the model is untouched
    assert np.abs(m.conv1.adder.data).sum() > 0
    assert [n for n, _ in m.named_parameters()] == [k for k in sd if "running" not in k and "num_batches" not in k]


def test_load_state_dict_roundtrip_and_errors():
    a, b = Block(), Block()
    b.conv1.adder.data[...] = 5.0
    a(RNG.standard_normal((2, 3, 4, 4)).astype(np.float32))  # updates a's running stats
    b.load_state_dict(a.state_dict())
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(va, vb, err_msg=k)
    assert int(b.bn1.num_batches_tracked) == 1
    bad = a.state_dict()
    bad["conv1.adder"] = np.zeros((4, 3, 1, 1), np.float32)
    del bad["bn1.bias"]
    bad["extra.weight"] = np.zeros(1)
    with pytest.raises(ValueError) as err:
        b.load_state_dict(bad)
    text = str(err.value)
    assert "conv1.adder: expected (4, 3, 3, 3), got (4, 3, 1, 1)" in text
    assert "bn1.bias" in text and "extra.weight" in text
    partial = a.state_dict()
    del partial["bn1.bias"]
    missing, unexpected = b.load_state_dict(partial, strict=False)
    assert missing == ["bn1.bias"] and unexpected == []


def test_train_eval_and_float64():
    m = Block()
    x = RNG.standard_normal((2, 3, 4, 4))
    with pytest.raises(TypeError, match="dtype"):
        m(x)  # float64 input into a float32 model: named, not silently cast
    m.to(np.float64)
    assert m.conv1.adder.data.dtype == np.float64 and m.bn1.running_var.dtype == np.float64
    assert m.bn1.num_batches_tracked.dtype == np.int64
    m.eval()
    rm = m.bn1.running_mean.copy()
    y = m(x)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(m.bn1.running_mean, rm)  # eval leaves stats alone
    m.train()
    m(x)
    assert not np.array_equal(m.bn1.running_mean, rm)


def test_module_call_matches_ops():
    layer = nn.Adder2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), rng=np.random.default_rng(3))
    x = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(layer(x).data, ops.adder2d_forward(x, layer.adder.data, (2, 1), (1, 0)))
    assert layer.adder.data.shape == (3, 2, 3, 2)


def test_adder_layer_bias_authors_names_init_and_gradient():
    """bias=True: the authors' parameter ``b`` (adder.py: U(0, 1) init, added per channel),
    a strict load of a state dict with their keys, and d(loss)/db by central differences."""
    from addercore.gradcheck import numeric_grad

    layer = nn.Adder2d(2, 5, 3, padding=1, bias=True, rng=np.random.default_rng(4),
                       dtype=np.float64)
    assert list(layer.state_dict()) == ["adder", "b"]
    assert layer.bias is layer.b and layer.b.data.shape == (5,)
    assert np.all((layer.b.data >= 0) & (layer.b.data < 1)) and np.ptp(layer.b.data) > 0
    assert nn.Adder2d(2, 5, 3).bias is None and "bias=True" in repr(layer)
    # the filter draw is the same with and without a bias (bias=False stays bit-identical)
    plain = nn.Adder2d(2, 5, 3, rng=np.random.default_rng(4), dtype=np.float64)
    np.testing.assert_array_equal(plain.adder.data, layer.adder.data)
    # the authors' key names load strictly
    state = {"adder": RNG.standard_normal((5, 2, 3, 3)), "b": RNG.standard_normal(5)}
    layer.load_state_dict(state, strict=True)
    np.testing.assert_array_equal(layer.b.data, state["b"])
    x = RNG.standard_normal((2, 2, 4, 4))
    y = layer(x).data
    np.testing.assert_array_equal(
        y, ops.adder2d_forward(x, state["adder"], 1, 1) + state["b"][None, :, None, None])
    g = RNG.standard_normal(y.shape)
    layer.zero_grad()
    F.sum(F.mul(layer(x), g)).backward()
    b = layer.b.data
    numeric = numeric_grad(lambda: np.sum(layer(x).data * g), b)
    np.testing.assert_allclose(layer.b.grad, numeric, rtol=1e-6, atol=1e-8)
    # the optimiser scales the filter gradient adaptively, never the bias (adder.py's backward
    # rescales only grad_W_col)
    assert layer.adder.adaptive_eta == 0.2 and layer.b.adaptive_eta is None


# --------------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------------
def reference_sgd(p, grads, lr, momentum, wd, nesterov):
    """torch.optim.SGD's update (dampening 0), written out."""
    buf = None
    for g in grads:
        d = g + wd * p
        buf = d.copy() if buf is None else momentum * buf + d
        p = p - lr * (d + momentum * buf if nesterov else buf)
    return p


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_reference_update(nesterov):
    p0 = RNG.standard_normal((3, 2))
    grads = [RNG.standard_normal((3, 2)) for _ in range(4)]
    p = Tensor(p0.copy(), requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    for g in grads:
        p.grad = g.copy()
        opt.step()
    np.testing.assert_allclose(p.data, reference_sgd(p0, grads, 0.1, 0.9, 5e-4, nesterov), rtol=1e-12)


def test_adaptive_scaling_placements():
    layer = nn.Adder2d(2, 2, 3, rng=np.random.default_rng(0), dtype=np.float64)
    w0 = layer.adder.data.copy()
    g = RNG.standard_normal(w0.shape) * 37.0
    k = g.size
    alpha = 0.2 * math.sqrt(k) / np.linalg.norm(g)

    # default: rescale the raw gradient, then weight decay and momentum (authors' code)
    layer.adder.grad = g.copy()
    opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt.step()
    np.testing.assert_allclose(layer.adder.data, w0 - 0.1 * (alpha * g + 5e-4 * w0), rtol=1e-12)

    # the paper's placement: factor on the update
    layer.adder.data[...] = w0
    layer.adder.grad = g.copy()
    opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, placement="update")
    opt.step()
    np.testing.assert_allclose(layer.adder.data, w0 - 0.1 * alpha * (g + 5e-4 * w0), rtol=1e-12)

    # ordinary parameters are never rescaled; adaptive_scaling=False turns it off
    layer.adder.data[...] = w0
    layer.adder.grad = g.copy()
    optim.SGD(layer.parameters(), lr=0.1, adaptive_scaling=False).step()
    np.testing.assert_allclose(layer.adder.data, w0 - 0.1 * g, rtol=1e-12)


def test_optimizer_state_roundtrip():
    p = Tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0, 2.0, 3.0])
    opt.step()
    state = opt.state_dict()
    q = Tensor(p.data.copy(), requires_grad=True)
    opt2 = optim.SGD([q], lr=0.5, momentum=0.9)
    opt2.load_state_dict(state)
    p.grad = q.grad = np.array([0.5, 0.5, 0.5])
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(p.data, q.data)


def test_schedules():
    p = Tensor(np.ones(1), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    sched = optim.CosineAnnealingLR(opt, total_epochs=400)
    assert opt.lr == pytest.approx(0.1)
    for e in range(1, 201):
        sched.step()
    # method §8: lr(e) = 0.05·(1 + cos(π·e/400))
    assert opt.lr == pytest.approx(0.05 * (1 + math.cos(math.pi * 200 / 400)))
    opt2 = optim.SGD([p], lr=0.1)
    sched2 = optim.MultiStepLR(opt2, milestones=[2, 4], gamma=0.1)
    lrs = [opt2.lr] + [sched2.step() for _ in range(5)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


# --------------------------------------------------------------------------------------------
# Supplement, Propositions 1-2: minimise |x - f| with sign vs full-precision gradients
# --------------------------------------------------------------------------------------------
def minimise_distance(filter_grad, lr=0.3, steps=200):
    x = np.array([[[[0.77]]]])
    f = np.array([[[[0.0]]]])
    history = []
    for _ in range(steps):
        # loss = |x - f| = -y, so dL/dy = -1
        _, gw = ops.adder2d_backward(x, f, -np.ones((1, 1, 1, 1)), filter_grad=filter_grad)
        f = f - lr * gw
        history.append(abs(float(x.ravel()[0] - f.ravel()[0])))
    return np.array(history)


def test_proposition_sign_gradient_oscillates_full_gradient_converges():
    sign = minimise_distance("sign")
    full = minimise_distance("full")
    # full precision: |x - f| shrinks geometrically by (1 - lr) per step
    np.testing.assert_allclose(full[:5], 0.77 * 0.7 ** np.arange(1, 6), rtol=1e-12)
    assert full[-1] < 1e-12
    # sign: never settles, keeps jumping by lr around the optimum
    assert sign[-50:].min() > 0.01 and np.all(sign[-50:] < 0.3 + 1e-12)
    assert np.any(np.diff(sign[-50:]) != 0)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------
def test_tiny_adder_network_overfits_a_batch():
    nn.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Adder2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Adder2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16, 4))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(60):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]
    # batch statistics (train mode): the net has memorised the batch
    assert np.mean(np.argmax(logits.data, axis=1) == y) == 1.0
