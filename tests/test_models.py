"""Model zoo: the authors' ResNet-20 state-dict names (real checkpoint), shapes, variants."""
import numpy as np
import pytest

from addercore import functional as F
from addercore import nn
from addercore.gradcheck import numeric_grad
from addercore.io import load_torch_checkpoint, strip_prefix
from addercore.models import (MODELS, MaxPool2d, get_model, lenet5_bn, resnet18, resnet20,
                              resnet32, resnet50, resnet56, vgg_small)
from addercore.tensor import Tensor, no_grad
from addercore.threads import num_threads
from conftest import shared_data_path


@pytest.fixture(autouse=True)
def _one_thread():
    """One kernel/BLAS thread: these tiny problems only lose to thread start-up on 2 cores."""
    with num_threads(1):
        yield



def _rng():
    return np.random.default_rng(0)


def test_resnet20_keys_match_released_checkpoint_and_load_strictly():
    path = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    state = strip_prefix(load_torch_checkpoint(path))
    model = resnet20()
    ours = model.state_dict()
    assert list(ours) == list(state)  # same names, same (PyTorch) order
    assert all(ours[k].shape == np.shape(state[k]) for k in ours)
    model.load_state_dict(state, strict=True)
    assert np.array_equal(model.layer2[0].downsample[0].adder.data,
                          state["layer2.0.downsample.0.adder"])


def test_released_checkpoint_classifies_real_images():
    ckpt = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    data = shared_data_path("cifar-10-batches-py")
    from addercore.data import load_cifar10, normalize

    x, y = load_cifar10(data, train=False, download=False)
    model = resnet20()
    model.load_state_dict(strip_prefix(load_torch_checkpoint(ckpt)))
    model.eval()
    with no_grad():
        pred = model(normalize(x[:200])).data.argmax(axis=1)
    assert (pred == y[:200]).mean() > 0.85  # the authors state 91.8% on the full test set


@pytest.mark.parametrize("factory,blocks", [(resnet20, 3), (resnet32, 5), (resnet56, 9)])
def test_resnet_cifar_structure(factory, blocks):
    m = factory(num_classes=100)
    names = list(m.state_dict())
    assert names[0] == "conv1.weight" and names[-1] == "bn2.num_batches_tracked"
    assert f"layer3.{blocks - 1}.conv2.adder" in names and f"layer3.{blocks}.conv1.adder" not in names
    assert "layer1.0.downsample.0.adder" not in names  # identity shortcut in stage 1
    for stage in (2, 3):
        assert f"layer{stage}.0.downsample.0.adder" in names
        assert f"layer{stage}.0.downsample.1.running_var" in names
    assert m.fc.weight.shape == (100, 64, 1, 1) and m.fc.bias is None
    assert m.bn2.num_features == 100
    adders = [mod for mod in m.modules() if isinstance(mod, nn.Adder2d)]
    assert len(adders) == 6 * blocks + 2
    assert m.conv1.weight.shape == (16, 3, 3, 3) and m.conv1.bias is None


def test_resnet20_parameter_count_and_init():
    m = resnet20(rng=_rng())
    n = sum(p.data.size for p in m.parameters())
    assert 0.26e6 < n < 0.28e6  # the well-known 0.27M
    w = np.concatenate([mod.adder.data.ravel() for mod in m.modules() if isinstance(mod, nn.Adder2d)])
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1)
    assert np.all(m.bn1.weight.data == 1) and np.all(m.bn1.bias.data == 0)


def test_cnn_kind_uses_bias_free_convolutions_with_weight_names():
    m = resnet20(kind="cnn")
    names = list(m.state_dict())
    assert "layer1.0.conv1.weight" in names and "layer2.0.downsample.0.weight" in names
    assert not any(k.endswith(".adder") for k in names)
    assert not any(isinstance(mod, nn.Adder2d) for mod in m.modules())
    assert all(mod.bias is None for mod in m.modules() if isinstance(mod, nn.Conv2d))


@pytest.mark.parametrize("kind,norm", [("adder", "l1"), ("adder", "l2"), ("cnn", "l1")])
def test_resnet20_forward_backward(kind, norm):
    m = resnet20(kind=kind, norm=norm, rng=_rng())
    x = _rng().standard_normal((4, 3, 32, 32)).astype(np.float32)
    logits = m(x)
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    F.cross_entropy(logits, np.array([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in m.parameters())
    if kind == "adder":
        assert all(mod.norm == norm for mod in m.modules() if isinstance(mod, nn.Adder2d))


def test_float64_and_same_rng_same_model():
    a = resnet20(dtype=np.float64, rng=np.random.default_rng(5))
    b = resnet20(dtype=np.float64, rng=np.random.default_rng(5))
    assert a.dtype == np.float64
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)
    assert a(np.zeros((2, 3, 32, 32))).dtype == np.float64


def test_eta_reaches_adder_layers():
    m = resnet20(eta=0.1)
    etas = {mod.adder.adaptive_eta for mod in m.modules() if isinstance(mod, nn.Adder2d)}
    assert etas == {0.1}
    assert getattr(m.conv1.weight, "adaptive_eta", None) is None


def test_vgg_small_and_lenet_shapes():
    m = vgg_small(rng=_rng())
    assert m(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    assert isinstance(m.features[0], nn.Conv2d) and isinstance(m.features[3], nn.Adder2d)
    assert sum(isinstance(mod, nn.Adder2d) for mod in m.modules()) == 5
    l = lenet5_bn(rng=_rng())
    assert l(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    assert sum(isinstance(mod, nn.Adder2d) for mod in l.modules()) == 5


def test_resnet18_forward_cnn_and_names():
    m = resnet18(kind="cnn", num_classes=7, rng=_rng()).eval()
    assert m(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 7)
    a = resnet18()
    names = list(a.state_dict())
    assert "layer4.1.conv2.adder" in names and "layer4.0.downsample.0.adder" in names
    assert "fc.weight" in names and "bn2.running_mean" in names


TINY = (4, 4, 8, 8)  # narrow stage widths: the ImageNet topology at test speed


@pytest.mark.parametrize("size", [32, 224, 256, (40, 33)])
def test_resnet_imagenet_any_input_size_gives_logits(size):
    """Adaptive 1×1 pooling: (N, num_classes) for every input >= 32 (a 256×256 input gave
    (1, 4000) with the old fixed 7×7 pooling)."""
    h, w = (size, size) if isinstance(size, int) else size
    x = np.random.default_rng(2).standard_normal((2, 3, h, w)).astype(np.float32)
    m = resnet18(num_classes=5, kind="cnn", rng=_rng(), widths=TINY).eval()
    with no_grad():
        assert m(x).shape == (2, 5)
    if size == 32:
        a = resnet50(num_classes=3, rng=_rng(), widths=(2, 2, 2, 2)).eval()
        with no_grad():
            assert a(x).shape == (2, 3)


def test_resnet_imagenet_head_is_global_mean_fc_with_bias_bn():
    """The head computed by hand: mean over H, W of layer4's map, the 1×1 fc as a matrix
    product plus its bias, then bn2 with its running statistics (float64)."""
    rng = np.random.default_rng(5)
    m = resnet18(num_classes=6, kind="cnn", rng=_rng(), widths=TINY, dtype=np.float64).eval()
    m.fc.bias.data[...] = rng.standard_normal(6)
    m.bn2.running_mean[...] = rng.standard_normal(6)
    m.bn2.running_var[...] = rng.uniform(0.5, 2.0, 6)
    x = rng.standard_normal((2, 3, 72, 72))
    with no_grad():
        logits = m(x).data
        f = m.maxpool(m.bn1(m.conv1(x), relu=True))
        f = m.layer4(m.layer3(m.layer2(m.layer1(f)))).data
    assert f.shape == (2, 8, 3, 3)
    z = f.mean(axis=(2, 3)) @ m.fc.weight.data[:, :, 0, 0].T + m.fc.bias.data
    bn = m.bn2
    expected = ((z - bn.running_mean) / np.sqrt(bn.running_var + bn.eps) * bn.weight.data
                + bn.bias.data)
    np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-12)


def test_resnet_imagenet_too_small_input_is_refused():
    m = resnet18(num_classes=5, kind="cnn", rng=_rng(), widths=TINY)
    with pytest.raises(ValueError, match=r"at least 32 .*got shape \(1, 3, 31, 64\)"):
        m(np.zeros((1, 3, 31, 64), np.float32))


def _authors_resnet50_state():
    """Keys and shapes of the authors' ResNet-50 state dict (their resnet50.py in
    github.com/huawei-noah/AdderNet, PyTorch's registration order), written out here: conv1
    (multiplication), bn1, Bottlenecks conv1/2/3 (adder2d: ``.adder``) with bn1/2/3 and a
    downsample (adder 1×1, BatchNorm) in each stage's first block, then the head
    ``fc = nn.Conv2d(2048, 1000, 1)`` (bias: PyTorch's default) and ``bn2``."""
    def bn(prefix, c):
        return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)),
                (f"{prefix}.running_mean", (c,)), (f"{prefix}.running_var", (c,)),
                (f"{prefix}.num_batches_tracked", ())]

    keys = [("conv1.weight", (64, 3, 7, 7))] + bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            keys += [(f"{p}.conv1.adder", (planes, inplanes, 1, 1))] + bn(f"{p}.bn1", planes)
            keys += [(f"{p}.conv2.adder", (planes, planes, 3, 3))] + bn(f"{p}.bn2", planes)
            keys += [(f"{p}.conv3.adder", (4 * planes, planes, 1, 1))] + bn(f"{p}.bn3", 4 * planes)
            if b == 0:
                keys += [(f"{p}.downsample.0.adder", (4 * planes, inplanes, 1, 1))]
                keys += bn(f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    keys += [("fc.weight", (1000, 2048, 1, 1)), ("fc.bias", (1000,))] + bn("bn2", 1000)
    return keys


def test_resnet50_loads_the_authors_state_dict_strictly():
    keys = _authors_resnet50_state()
    m = resnet50(rng=_rng())
    assert [(k, np.shape(v)) for k, v in m.state_dict().items()] == keys
    rng = np.random.default_rng(3)
    state = {k: (np.array(7, np.int64) if k.endswith("num_batches_tracked")
                 else rng.standard_normal(shape).astype(np.float32)) for k, shape in keys}
    m.load_state_dict(state, strict=True)
    np.testing.assert_array_equal(m.fc.bias.data, state["fc.bias"])
    np.testing.assert_array_equal(m.layer4[2].conv3.adder.data, state["layer4.2.conv3.adder"])


def test_get_model_and_argument_errors():
    assert set(MODELS) >= {"resnet20", "resnet32", "resnet56", "vgg_small", "lenet5_bn",
                           "resnet18", "resnet50"}
    assert isinstance(get_model("resnet20", kind="cnn"), nn.Module)
    with pytest.raises(ValueError, match="model must be one of"):
        get_model("resnet21")
    with pytest.raises(ValueError, match="kind must be one of"):
        resnet20(kind="mul")
    with pytest.raises(ValueError, match="norm must be one of"):
        resnet20(norm="l3")
    with pytest.raises(ValueError, match="num_classes"):
        resnet20(num_classes=0)
    with pytest.raises(ValueError, match="eta"):
        resnet20(eta=-1)
    with pytest.raises(TypeError, match="dtype"):
        resnet20(dtype=np.int32)
    with pytest.raises(TypeError, match="rng"):
        resnet20(rng=3)


def test_maxpool_forward_and_gradient():
    rng = _rng()
    x = rng.standard_normal((2, 3, 7, 7))
    pool = MaxPool2d(3, stride=2, padding=1)
    t = Tensor(x, requires_grad=True)
    y = pool(t)
    assert y.shape == (2, 3, 4, 4)
    # reference by brute force
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ref = np.array([[[[xp[n, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(4)]
                      for i in range(4)] for c in range(3)] for n in range(2)])
    assert np.array_equal(y.data, ref)
    g = rng.standard_normal(y.shape)
    F.sum(F.mul(y, g)).backward()
    x = x.copy()  # perturbed in place by numeric_grad
    num = numeric_grad(lambda: float((pool(x).data * g).sum()), x, eps=1e-6)
    np.testing.assert_allclose(t.grad, num, atol=1e-6)
