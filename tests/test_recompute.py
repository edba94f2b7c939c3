"""Recomputed activations (``Tensor.release_data``, ``ops.batch_norm2d_relu_apply``, the
``recompute`` option of the ResNets): a released bn → ReLU output comes back bit for bit, so a
recomputing model gives exactly the loss and gradients of one that keeps every activation,
while its graph holds fewer arrays; the graph is still freed by reference counting alone.

Backend-parametrised tests run on the numpy reference and, when it is the active backend, on
the compiled kernels (``ADDERCORE_BACKEND=numpy`` keeps them on the reference only).
"""
import gc
import weakref

import numpy as np
import pytest

import addercore
from addercore import functional as F
from addercore import nn, ops
from addercore._backend import use_backend
from addercore.models import resnet20
from addercore.models._common import body_conv
from addercore.models.resnet_imagenet import Bottleneck

BACKENDS = [
    "numpy",
    pytest.param("cython", marks=pytest.mark.skipif(
        addercore.backend() != "cython", reason="compiled backend not active")),
]


def _bn_case(dtype, seed=0, shape=(5, 4, 6, 3)):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 20 - 700).astype(dtype)  # adder-like activations
    c = shape[1]
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm = (rng.standard_normal(c) - 700).astype(dtype)
    rv = rng.uniform(300, 500, c).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype)
    return x, w, b, rm, rv, r


# --------------------------------------------------------------------------------------------
# ops.batch_norm2d_relu_apply == the forward's output, bit for bit
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_residual", [False, True])
def test_apply_reproduces_forward_bit_for_bit(backend, dtype, training, with_residual):
    x, w, b, rm, rv, r = _bn_case(dtype)
    residual = r if with_residual else None
    with use_backend(backend):
        y, mean, invstd, stats = ops.batch_norm2d_relu_forward(
            x, w, b, rm, rv, training, 0.1, 1e-5, residual, return_stats=True)
        rm_after, rv_after = rm.copy(), rv.copy()
        again = ops.batch_norm2d_relu_apply(x, w, b, stats, 1e-5, residual)
        plain = ops.batch_norm2d_relu_forward(x, w, b, rm.copy(), rv.copy(), training, 0.1,
                                              1e-5, residual)
    assert again.dtype == y.dtype and again.shape == y.shape
    assert again.tobytes() == y.tobytes()  # the same bits (signs of zeros included)
    np.testing.assert_array_equal(rm, rm_after)  # apply leaves the running buffers alone
    np.testing.assert_array_equal(rv, rv_after)
    assert len(plain) == 3 and plain[0].tobytes() == y.tobytes()  # default: 3-tuple as before
    assert isinstance(stats, tuple) and len(stats) == 2
    assert all(s.shape == (x.shape[1],) for s in stats)
    if not training:  # copies of the running estimates, never the buffers themselves
        assert not any(np.shares_memory(s, buf) for s in stats for buf in (rm, rv))


def test_apply_validation():
    x, w, b, rm, rv, _ = _bn_case(np.float32)
    _, _, _, stats = ops.batch_norm2d_relu_forward(x, w, b, rm, rv, return_stats=True)
    with pytest.raises(TypeError, match="stats"):
        ops.batch_norm2d_relu_apply(x, w, b, list(stats))
    with pytest.raises(ValueError, match="mean"):
        ops.batch_norm2d_relu_apply(x, w, b, (stats[0][:2], stats[1]))
    with pytest.raises(ValueError, match="residual"):
        ops.batch_norm2d_relu_apply(x, w, b, stats, residual=x[:1])
    with pytest.raises(ValueError, match="eps"):
        ops.batch_norm2d_relu_apply(x, w, b, stats, eps=0.0)


# --------------------------------------------------------------------------------------------
# Tensor.release_data
# --------------------------------------------------------------------------------------------
def _bn_relu_node(dtype=np.float64):
    x, w, b, rm, rv, _ = _bn_case(dtype, seed=4)
    xt = addercore.Tensor(x, requires_grad=True)
    wt = addercore.Tensor(w, requires_grad=True)
    bt = addercore.Tensor(b, requires_grad=True)
    return xt, wt, bt, F.batch_norm2d_relu(xt, wt, bt, rm, rv)


def test_release_then_read_gives_the_identical_array_once():
    _, _, _, y = _bn_relu_node(np.float32)
    before = y.data.copy()
    calls = []
    recompute = y._recompute
    y._recompute = lambda: calls.append(1) or recompute()
    assert not y.is_released
    assert y.release_data() is True
    assert y.is_released and "data" not in vars(y)
    assert y.shape == before.shape  # any read re-materialises ...
    assert y.data.tobytes() == before.tobytes()
    assert y.data is y.data and len(calls) == 1  # ... once, then it is kept
    assert not y.is_released
    y.data = np.zeros_like(before)  # assignment still works
    assert not y.data.any()


def test_release_is_a_no_op_without_a_recompute_rule():
    xt, wt, bt, y = _bn_relu_node()
    for t in (xt, wt, F.relu(xt)):  # a leaf, a parameter, an op without a rule
        assert t.release_data() is False and not t.is_released
    with addercore.no_grad():
        z = F.batch_norm2d_relu(xt, wt, bt)
    assert z._recompute is None and z.release_data() is False
    assert F.batch_norm2d_relu(xt.data, wt.data, bt.data).release_data() is False  # constants
    with pytest.raises(AttributeError):
        y.no_such_attribute


def test_backward_through_a_released_output_and_closures_dropped():
    """Gradients are those of the kept output; after backward the recompute rules are gone."""
    grads = []
    for release in (False, True):
        xt, wt, bt, y = _bn_relu_node()
        z = F.mul(y, 3.0)  # mul's backward reads y.data
        loss = F.sum(F.mul(z, z))
        if release:
            y.release_data()
            z.release_data()  # mul has no rule: nothing happens
            assert y.is_released and not z.is_released
        loss.backward()
        assert y._recompute is None and y._backward is None
        grads.append([t.grad.tobytes() for t in (xt, wt, bt)])
    assert grads[0] == grads[1]

    assert y.release_data() is False and not y.is_released  # the rule went with the graph
    y.__dict__.pop("data")  # (forced) a released array nobody re-read cannot come back
    with pytest.raises(RuntimeError, match="released"):
        y.data


def test_released_graph_freed_by_reference_counting():
    """No reference cycle through the recompute or backward closures (gc disabled)."""
    model = resnet20(10, kind="adder", dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    gc.collect()
    gc.disable()
    try:
        loss = F.cross_entropy(model(x), np.array([1, 2]))
        nodes = loss._topological_order()
        released = [weakref.ref(n) for n in nodes if n.is_released]
        refs = [weakref.ref(n) for n in nodes if n._op]
        assert len(released) == 9
        del nodes
        loss.backward()
        del loss
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


# --------------------------------------------------------------------------------------------
# Models: recompute=True gives the same bits as recompute=False
# --------------------------------------------------------------------------------------------
def _step(model, x, t):
    """Loss, parameter gradients and running buffers after one training forward/backward."""
    model.zero_grad()
    loss = F.cross_entropy(model(x), t)
    loss.backward()
    return (loss.item(), {n: p.grad.copy() for n, p in model.named_parameters()},
            {n: b.copy() for n, b in model.named_buffers()})


def _assert_same_bits(a, b):
    assert a[0] == b[0]
    for got, want in ((a[1], b[1]), (a[2], b[2])):
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].dtype == want[name].dtype, name
            assert got[name].tobytes() == want[name].tobytes(), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet20_recompute_bit_identical(backend, dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(dtype)
    t = np.array([0, 7])
    with use_backend(backend):
        results = []
        for recompute in (False, True):
            model = resnet20(10, kind="adder", dtype=dtype, rng=np.random.default_rng(0),
                             recompute=recompute)
            assert all(b.recompute is recompute for layer in (model.layer1, model.layer2,
                                                                  model.layer3) for b in layer)
            results.append(_step(model, x, t))
            results.append(_step(model, x, t))  # second step: running buffers moved
    _assert_same_bits(results[0], results[2])
    _assert_same_bits(results[1], results[3])
    assert all(np.abs(g).max() > 0 for g in results[2][1].values())


def test_bottleneck_recompute_bit_identical():
    outs = []
    for recompute in (False, True):
        cfg = dict(kind="adder", norm="l1", eta=0.2, rng=np.random.default_rng(2),
                   dtype=np.float32, recompute=recompute)
        down = nn.Sequential(body_conv(cfg, 8, 8, 1, stride=2),
                             nn.BatchNorm2d(8, dtype=np.float32))
        block = Bottleneck(cfg, 8, 2, stride=2, downsample=down)
        x = addercore.Tensor(
            np.random.default_rng(3).standard_normal((3, 8, 6, 6)).astype(np.float32),
            requires_grad=True)
        y = block(x)
        nodes = y._topological_order()
        assert sum(n.is_released for n in nodes) == (2 if recompute else 0)
        F.sum(F.mul(y, y)).backward()
        outs.append([y.data.tobytes(), x.grad.tobytes()]
                    + [p.grad.tobytes() for p in block.parameters()])
    assert outs[0] == outs[1]


def test_eval_and_no_grad_release_nothing():
    model = resnet20(10, kind="adder", dtype=np.float64, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    model.eval()
    with addercore.no_grad():
        y = model(x)
    assert y._parents == () and y._recompute is None
    y = model(x)  # eval mode with a graph: running statistics, still recomputed exactly
    loss = F.cross_entropy(y, np.array([1, 2]))
    assert sum(n.is_released for n in loss._topological_order()) == 9
    loss.backward()
