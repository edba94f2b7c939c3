"""Fused BatchNorm → (+ residual) → ReLU (``ops.batch_norm2d_relu_*``, ``F.batch_norm2d_relu``,
``BatchNorm2d(relu=True)``) against independent references: the composition of the existing
reference ops, central finite differences in float64, and the unfused ResNet blocks.

The op-level reference tests and the model tests run on whichever backend is active
(``ADDERCORE_BACKEND=numpy`` forces the reference); tests of the compiled kernels themselves
(bit identity, thread counts) skip when the Cython backend is not active.
"""
import numpy as np
import pytest

import addercore
from addercore import functional as F
from addercore import nn, ops
from addercore.models import resnet20
from addercore.models._common import body_conv
from addercore.models.resnet_imagenet import Bottleneck
from addercore.models.lenet import lenet5_bn
from addercore.gradcheck import numeric_grad
from addercore.ops import reference

needs_cython = pytest.mark.skipif(addercore.backend() != "cython",
                                  reason="compiled backend not active (numpy reference only)")

#: float32 tolerances, as a fraction of the largest magnitude of the compared array: the fused
#: op sums in double, the reference in float32 numpy reductions.
F32_FWD, F32_BWD = 2e-5, 1e-3
F64_FWD, F64_BWD = 1e-12, 1e-11


def _case(dtype, seed=3, shape=(6, 5, 7, 3)):
    rng = np.random.default_rng(seed)
    # adder-like activations: large negative mean, modest spread
    x = (rng.standard_normal(shape) * 20 - 700).astype(dtype)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    rm = (rng.standard_normal(c) - 700).astype(dtype)
    rv = rng.uniform(300, 500, c).astype(dtype)
    return x, w, b, r, g, rm, rv


def _composition(x, w, b, rm, rv, training, residual, g):
    """Unfused chain of the existing reference ops: BN → add → ReLU, ReLU' → BN'."""
    y, mean, invstd = reference.batch_norm2d_forward(x, w, b, rm, rv, training, 0.1, 1e-5)
    pre = y if residual is None else y + residual
    out = reference.relu_forward(pre)
    g1 = reference.relu_backward(pre, g)
    gi, gw, gb = reference.batch_norm2d_backward(x, w, g1, mean, invstd, training)
    return pre, out, mean, invstd, (gi, gw, gb, None if residual is None else g1)


def _close(got, want, frac):
    np.testing.assert_allclose(got, want, rtol=0, atol=frac * max(np.abs(want).max(), 1e-30))


# --------------------------------------------------------------------------------------------
# Ops against the composition of reference ops
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,fwd_tol,bwd_tol",
                         [(np.float64, F64_FWD, F64_BWD), (np.float32, F32_FWD, F32_BWD)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_ops_match_reference_composition(dtype, fwd_tol, bwd_tol, training, with_residual):
    x, w, b, r, g, rm, rv = _case(dtype)
    residual = r if with_residual else None
    rm_c, rv_c, rm_f, rv_f = rm.copy(), rv.copy(), rm.copy(), rv.copy()
    pre, out, mean_c, invstd_c, grads_c = _composition(x, w, b, rm_c, rv_c, training, residual, g)
    # the ReLU mask must be the same for both: no pre-ReLU value within 1e-4 of 0 (float32
    # rounding moves these O(1) values by ~1e-6)
    pre64 = _composition(*(a.astype(np.float64) for a in (x, w, b, rm, rv)), training,
                         None if residual is None else residual.astype(np.float64),
                         g.astype(np.float64))[0]
    assert np.abs(pre64).min() > 1e-4 and 0.2 < (pre64 > 0).mean() < 0.8

    y, mean, invstd = ops.batch_norm2d_relu_forward(x, w, b, rm_f, rv_f, training,
                                                    residual=residual)
    assert y.dtype == mean.dtype == invstd.dtype == dtype
    assert y.shape == x.shape and mean.shape == invstd.shape == (x.shape[1],)
    _close(y, out, fwd_tol)
    _close(mean, mean_c, fwd_tol)
    _close(invstd, invstd_c, fwd_tol)
    _close(rm_f, rm_c, fwd_tol)  # running buffers updated in place exactly like plain BN
    _close(rv_f, rv_c, fwd_tol)
    np.testing.assert_array_equal(y > 0, pre > 0)

    grads = ops.batch_norm2d_relu_backward(x, w, y, g, mean, invstd, training,
                                           residual=with_residual)
    assert len(grads) == 4
    for name, got, want in zip(("grad_input", "grad_weight", "grad_bias", "grad_residual"),
                               grads, grads_c):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == dtype and got.shape == want.shape, name
        _close(got, want, bwd_tol)


@pytest.mark.parametrize("training", [True, False])
def test_reference_fused_is_the_composition(training):
    """The numpy reference of the fused op is literally BN, add, max(·, 0) (both backends)."""
    x, w, b, r, g, rm, rv = _case(np.float32, seed=5)
    for residual in (None, r):
        pre, out, mean_c, invstd_c, grads_c = _composition(x, w, b, rm.copy(), rv.copy(),
                                                           training, residual, g)
        y, mean, invstd = reference.batch_norm2d_relu_forward(
            x, w, b, rm.copy(), rv.copy(), training, 0.1, 1e-5, residual)
        np.testing.assert_array_equal(y, out)
        grads = reference.batch_norm2d_relu_backward(x, w, y, g, mean, invstd, training,
                                                     residual is not None)
        for got, want in zip(grads, grads_c):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got, want)


def test_all_relu_masked_and_nothing_masked():
    """Edge masks: output all zero -> zero gradients; all positive -> plain BN backward."""
    x, w, b, r, g, rm, rv = _case(np.float64, seed=6)
    big = np.full_like(r, 1e6)
    y, mean, invstd = ops.batch_norm2d_relu_forward(x, w, b, residual=-big)
    assert not y.any()
    gi, gw, gb, gr = ops.batch_norm2d_relu_backward(x, w, y, g, mean, invstd, residual=True)
    for a in (gi, gw, gb, gr):
        assert not a.any()
    y, mean, invstd = ops.batch_norm2d_relu_forward(x, w, b, residual=big)
    assert (y > 0).all()
    gi, gw, gb, gr = ops.batch_norm2d_relu_backward(x, w, y, g, mean, invstd, residual=True)
    for got, want in zip((gi, gw, gb), ops.batch_norm2d_backward(x, w, g, mean, invstd)):
        _close(got, want, 1e-13)
    np.testing.assert_array_equal(gr, g)


# --------------------------------------------------------------------------------------------
# Compiled kernels: same bits as the unfused compiled chain, for any thread count
# --------------------------------------------------------------------------------------------
@needs_cython
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_compiled_fused_equals_compiled_chain_bit_for_bit(dtype, training):
    from addercore.ops import fast

    x, w, b, r, g, rm, rv = _case(dtype, seed=7)
    for residual in (None, r):
        y0, m0, i0 = fast.batch_norm2d_forward(x, w, b, rm.copy(), rv.copy(), training, 0.1,
                                               1e-5)
        pre = y0 if residual is None else y0 + residual
        y, m, i = fast.batch_norm2d_relu_forward(x, w, b, rm.copy(), rv.copy(), training, 0.1,
                                                 1e-5, residual)
        np.testing.assert_array_equal(y, np.maximum(pre, 0))
        np.testing.assert_array_equal(m, m0)
        np.testing.assert_array_equal(i, i0)
        g1 = fast.relu_backward(pre, g)
        want = fast.batch_norm2d_backward(x, w, g1, m0, i0, training)
        got = fast.batch_norm2d_relu_backward(x, w, y, g, m, i, training, residual is not None)
        for a, b_ in zip(got[:3], want):
            np.testing.assert_array_equal(a, b_)
        if residual is not None:
            np.testing.assert_array_equal(got[3], g1)


@needs_cython
def test_fused_kernels_bit_identical_for_1_2_4_threads():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((4, 6, 9, 9)) * 30 - 500).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threads in (1, 2, 4):
        with addercore.num_threads(threads):
            res = []
            for residual in (None, r):
                rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
                y, m, i = ops.batch_norm2d_relu_forward(x, w, b, rm, rv, True, residual=residual)
                res += [y, m, i, rm, rv]
                res += [a for a in ops.batch_norm2d_relu_backward(
                    x, w, y, g, m, i, True, residual=residual is not None) if a is not None]
                ye, _, ie = ops.batch_norm2d_relu_forward(x, w, b, rm, rv, False,
                                                          residual=residual)
                res += [ye] + [a for a in ops.batch_norm2d_relu_backward(
                    x, w, ye, g, rm, ie, False, residual=residual is not None) if a is not None]
        results.append(res)
    for other in results[1:]:
        assert len(other) == len(results[0])
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


# --------------------------------------------------------------------------------------------
# The differentiable op: central finite differences (float64)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_residual", [False, True])
def test_functional_gradients_finite_differences(training, with_residual):
    rng = np.random.default_rng(11)
    shape = (3, 2, 3, 4)
    x = rng.standard_normal(shape) * 2 + 1
    w = rng.uniform(0.5, 1.5, 2) * np.array([1.0, -1.0])
    b = rng.standard_normal(2) * 0.3
    r = rng.standard_normal(shape)
    rm, rv = rng.standard_normal(2), rng.uniform(1, 3, 2)
    c = rng.standard_normal(shape)
    arrays = {"x": x, "weight": w, "bias": b}
    if with_residual:
        arrays["residual"] = r

    def loss_value(a):
        y, _, _ = ops.batch_norm2d_relu_forward(
            a["x"], a["weight"], a["bias"], None if training else rm, None if training else rv,
            training, residual=a.get("residual"))
        return float(np.sum(c * y))

    # the ReLU kinks must be far from every point the differences visit
    pre = reference.batch_norm2d_forward(x, w, b, rm.copy(), rv.copy(), training, 0.1, 1e-5)[0]
    pre = pre + r if with_residual else pre
    assert np.abs(pre).min() > 1e-3 and 0.2 < (pre > 0).mean() < 0.8

    tensors = {k: addercore.Tensor(v.copy(), requires_grad=True) for k, v in arrays.items()}
    y = F.batch_norm2d_relu(tensors["x"], tensors["weight"], tensors["bias"],
                            None if training else rm.copy(), None if training else rv.copy(),
                            training, residual=tensors.get("residual"))
    F.sum(F.mul(y, c)).backward()

    for name, base in arrays.items():
        numeric = numeric_grad(lambda: loss_value(arrays), base, eps=1e-6)
        analytic = tensors[name].grad
        assert analytic is not None and analytic.shape == base.shape, name
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def test_functional_backward_keeps_no_pre_relu_array():
    """The closures of the fused node hold no activation array at all (x, the parameters and
    the residual as Tensors, (C,) statistics): the output is read through a weak reference, so
    it can be released, and no pre-ReLU copy exists."""
    import weakref

    rng = np.random.default_rng(12)
    x = addercore.Tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True)
    res = addercore.Tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True)
    w = addercore.Tensor(np.ones(3), requires_grad=True)
    b = addercore.Tensor(np.zeros(3), requires_grad=True)
    y = F.batch_norm2d_relu(x, w, b, residual=res)
    assert y._op == "batch_norm2d_relu" and y._parents == (x, w, b, res)
    held = []
    for fn in (y._backward, y._recompute):
        for cell in fn.__closure__:
            value = cell.cell_contents
            held.extend(value if isinstance(value, tuple) else [value])
    assert not any(isinstance(a, np.ndarray) and a.ndim == 4 for a in held)
    assert all(a.shape == (3,) for a in held if isinstance(a, np.ndarray))
    assert not any(isinstance(a, addercore.Tensor) and a is y for a in held)  # no cycle
    assert any(isinstance(a, weakref.ref) and a() is y for a in held)


# --------------------------------------------------------------------------------------------
# Modules and models: fused blocks == unfused composition
# --------------------------------------------------------------------------------------------
def _bn(m, t):
    """Plain (unfused) BatchNorm with module m's parameters and buffers."""
    return F.batch_norm2d(t, m.weight, m.bias, m.running_mean, m.running_var, m.training,
                          m.momentum, m.eps)


def _resnet_cifar_unfused(model, x):
    x = F.relu(_bn(model.bn1, model.conv1(x)))
    for layer in (model.layer1, model.layer2, model.layer3):
        for blk in layer:
            out = F.relu(_bn(blk.bn1, blk.conv1(x)))
            out = _bn(blk.bn2, blk.conv2(out))
            residual = x if blk.downsample is None else blk.downsample(x)
            x = F.relu(F.add(out, residual))
    return model.flatten(_bn(model.bn2, model.fc(model.avgpool(x))))


def _loss_grads_buffers(model, forward, x, t):
    """Loss, parameter gradients and BN running buffers after one forward/backward."""
    model.zero_grad()
    loss = F.cross_entropy(forward(x), t)
    loss.backward()
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    buffers = {n: b.copy() for n, b in model.named_buffers() if "running" in n}
    return loss.item(), grads, buffers


def _compare_fused_unfused(model, unfused, x, t, rtol):
    state = model.state_dict()
    fused = _loss_grads_buffers(model, model, x, t)
    model.load_state_dict(state)
    plain = _loss_grads_buffers(model, lambda a: unfused(model, a), x, t)
    assert fused[0] == pytest.approx(plain[0], rel=rtol, abs=0)
    assert fused[1].keys() == plain[1].keys() and fused[2].keys() == plain[2].keys()
    for name in plain[1]:
        scale = max(np.abs(plain[1][name]).max(), 1e-30)
        np.testing.assert_allclose(fused[1][name], plain[1][name], rtol=0, atol=rtol * scale,
                                   err_msg=name)
    for name in plain[2]:
        np.testing.assert_allclose(fused[2][name], plain[2][name], rtol=rtol, err_msg=name)
    return fused


def test_resnet20_fused_blocks_equal_unfused_composition():
    """A whole ResNet-20 (4 images, float64, training): same loss, parameter gradients and
    running statistics with the fused blocks as with BN, add and ReLU as separate ops."""
    model = resnet20(10, kind="adder", dtype=np.float64, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 32, 32))
    t = np.array([0, 3, 7, 3])
    loss, grads, _ = _compare_fused_unfused(model, _resnet_cifar_unfused, x, t, rtol=1e-10)
    assert np.isfinite(loss) and len(grads) == len(model.parameters())
    assert all(np.abs(g).max() > 0 for g in grads.values())


@needs_cython
def test_resnet20_fused_blocks_bit_identical_to_unfused_on_compiled_backend():
    """The compiled fused kernels do the unfused chain's arithmetic: float32 training step,
    same bits (loss, every gradient, every running statistic)."""
    model = resnet20(10, kind="adder", dtype=np.float32, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    t = np.array([0, 3, 7, 3])
    state = model.state_dict()
    fused = _loss_grads_buffers(model, model, x, t)
    model.load_state_dict(state)
    plain = _loss_grads_buffers(model, lambda a: _resnet_cifar_unfused(model, a), x, t)
    assert fused[0] == plain[0]
    for a, b in ((fused[1], plain[1]), (fused[2], plain[2])):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _held_activations(nodes):
    """Distinct (N, C, H, W) arrays (H > 1) held by op outputs, without re-materialising
    released ones."""
    held = (vars(n).get("data") for n in nodes if n._op)
    return {id(a) for a in held if a is not None and a.ndim == 4 and a.shape[2] > 1}


@pytest.mark.parametrize("recompute, per_block", [(False, 4), (True, 3)])
def test_resnet20_graph_holds_four_or_three_activations_per_block(recompute, per_block):
    """The graph before backward: 2 stem activations, 4 per block (+2 per downsample), and no
    separate relu/add nodes; 3 per block when the bn1 → ReLU outputs are recomputed."""
    model = resnet20(10, kind="adder", dtype=np.float64, rng=np.random.default_rng(0),
                     recompute=recompute)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    loss = F.cross_entropy(model(x), np.array([1, 2]))
    nodes = loss._topological_order()
    ops_seen = [n._op for n in nodes if n._op]
    assert "relu" not in ops_seen and "add" not in ops_seen
    assert ops_seen.count("batch_norm2d_relu") == 1 + 2 * 9
    assert sum(n.is_released for n in nodes) == (9 if recompute else 0)
    assert len(_held_activations(nodes)) == 2 + per_block * 9 + 2 * 2
    loss.backward()


def test_bottleneck_and_lenet_fused_equal_unfused():
    cfg = dict(kind="adder", norm="l1", eta=0.2, rng=np.random.default_rng(2), dtype=np.float64)
    down = nn.Sequential(body_conv(cfg, 8, 8, 1, stride=2), nn.BatchNorm2d(8, dtype=np.float64))
    block = Bottleneck(cfg, 8, 2, stride=2, downsample=down)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8, 6, 6))

    def block_unfused(m, a):
        out = F.relu(_bn(m.bn1, m.conv1(a)))
        out = F.relu(_bn(m.bn2, m.conv2(out)))
        out = _bn(m.bn3, m.conv3(out))
        return F.relu(F.add(out, m.downsample(a)))

    c = rng.standard_normal((3, 8, 3, 3))
    state = block.state_dict()
    outs = []
    for fwd in (block, lambda a: block_unfused(block, a)):
        block.load_state_dict(state)
        block.zero_grad()
        xt = addercore.Tensor(x.copy(), requires_grad=True)
        y = fwd(xt)
        F.sum(F.mul(y, c)).backward()
        outs.append([y.data, xt.grad] + [p.grad for p in block.parameters()])
    for a, b_ in zip(*outs):
        np.testing.assert_allclose(a, b_, rtol=0, atol=1e-10 * max(np.abs(b_).max(), 1e-30))

    lenet = lenet5_bn(10, kind="adder", dtype=np.float64, rng=np.random.default_rng(4))

    def lenet_unfused(m, a):
        a = m.pool(F.relu(_bn(m.bn1, m.conv1(a))))
        a = m.pool(F.relu(_bn(m.bn2, m.conv2(a))))
        a = F.relu(_bn(m.bn3, m.fc1(a)))
        a = F.relu(_bn(m.bn4, m.fc2(a)))
        return m.flatten(_bn(m.bn5, m.fc3(a)))

    _compare_fused_unfused(lenet, lenet_unfused, rng.standard_normal((4, 1, 28, 28)),
                           np.array([1, 2, 3, 4]), rtol=1e-10)


def test_batchnorm_module_relu_and_residual():
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    rng = np.random.default_rng(9)
    x, r = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    y = bn(x, relu=True)
    assert y._op == "batch_norm2d_relu" and int(bn.num_batches_tracked) == 1
    y2 = bn(x, residual=r, relu=True)
    want = np.maximum(reference.batch_norm2d_forward(x, np.ones(3), np.zeros(3), None, None,
                                                     True, 0.1, 1e-5)[0] + r, 0)
    np.testing.assert_allclose(y2.data, want, rtol=0, atol=1e-12)
    assert bn(x)._op == "batch_norm2d"  # plain BN unchanged without relu=True
    with pytest.raises(ValueError, match="residual"):
        bn(x, residual=r)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
X = np.random.default_rng(10).standard_normal((2, 3, 4, 4))
ONES, ZEROS = np.ones(3), np.zeros(3)

BAD = {
    "residual shape": (lambda: ops.batch_norm2d_relu_forward(X, ONES, ZEROS, residual=X[:1]),
                       ValueError, r"residual must have shape \(2, 3, 4, 4\), got \(1, 3, 4, 4\)"),
    "residual rank": (lambda: ops.batch_norm2d_relu_forward(X, ONES, ZEROS, residual=X[0]),
                      ValueError, r"residual must have 4 dimensions"),
    "residual dtype": (lambda: ops.batch_norm2d_relu_forward(X, ONES, ZEROS,
                                                             residual=X.astype(np.float32)),
                       TypeError, r"residual must have dtype float64 like x, got float32"),
    "residual int": (lambda: ops.batch_norm2d_relu_forward(X, ONES, ZEROS,
                                                           residual=X.astype(np.int64)),
                     TypeError, r"residual must have dtype float32 or float64"),
    "residual list": (lambda: ops.batch_norm2d_relu_forward(X, ONES, ZEROS, residual=[1.0]),
                      TypeError, r"residual must be a numpy.ndarray"),
    "weight shape": (lambda: ops.batch_norm2d_relu_forward(X, np.ones(4), ZEROS),
                     ValueError, r"weight must have shape \(3,\)"),
    "eval without buffers": (lambda: ops.batch_norm2d_relu_forward(X, ONES, ZEROS,
                                                                   training=False),
                             ValueError, r"training=False needs running_mean"),
    "output shape": (lambda: ops.batch_norm2d_relu_backward(X, ONES, X[:, :2], X, ZEROS, ONES),
                     ValueError, r"output must have shape \(2, 3, 4, 4\), got \(2, 2, 4, 4\)"),
    "output dtype": (lambda: ops.batch_norm2d_relu_backward(X, ONES, X.astype(np.float32), X,
                                                            ZEROS, ONES),
                     TypeError, r"output must have dtype float64 like x, got float32"),
    "grad_output shape": (lambda: ops.batch_norm2d_relu_backward(X, ONES, X, X[:1], ZEROS,
                                                                 ONES),
                          ValueError, r"grad_output must have shape \(2, 3, 4, 4\)"),
    "mean shape": (lambda: ops.batch_norm2d_relu_backward(X, ONES, X, X, np.zeros(2), ONES),
                   ValueError, r"mean must have shape \(3,\)"),
    "residual flag": (lambda: ops.batch_norm2d_relu_backward(X, ONES, X, X, ZEROS, ONES,
                                                             residual=X),
                      TypeError, r"residual must be a bool"),
    "functional residual shape": (lambda: F.batch_norm2d_relu(X, ONES, ZEROS,
                                                              residual=X[:, :, :2]),
                                  ValueError, r"residual must have shape \(2, 3, 4, 4\)"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_validation_errors_name_the_argument(name):
    fn, exc, pattern = BAD[name]
    with pytest.raises(exc, match=pattern):
        fn()


def test_views_and_empty_batch_accepted():
    x = np.asfortranarray(X)
    r = X[:, :, ::-1, :]
    y, m, i = ops.batch_norm2d_relu_forward(x, ONES, ZEROS, residual=r)
    y2, _, _ = ops.batch_norm2d_relu_forward(np.ascontiguousarray(X), ONES, ZEROS,
                                             residual=np.ascontiguousarray(r))
    np.testing.assert_array_equal(y, y2)
    empty = np.zeros((0, 3, 4, 4))
    ye, _, ie = ops.batch_norm2d_relu_forward(empty, ONES, ZEROS, ZEROS, ONES, training=False,
                                              residual=empty)
    assert ye.shape == empty.shape
    grads = ops.batch_norm2d_relu_backward(empty, ONES, ye, empty, ZEROS, ie, training=False,
                                           residual=True)
    assert grads[0].shape == grads[3].shape == empty.shape
