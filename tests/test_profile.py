"""count_ops: the paper's operation counts (supplement Table 1) and the convention."""
import numpy as np
import pytest

from addercore.models import lenet5_bn, resnet18, resnet20, resnet50, vgg_small
from addercore.profile import count_ops, format_ops
from addercore.threads import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    """One kernel/BLAS thread: these tiny problems only lose to thread start-up on 2 cores."""
    with num_threads(1):
        yield


G = 1e9


def _close(value, target, rel=0.03):
    return abs(value - target) <= rel * target


def test_resnet18_reproduces_supplement_table1():
    cnn = count_ops(resnet18(kind="cnn"), (1, 3, 224, 224))
    l1 = count_ops(resnet18(kind="adder", norm="l1"), (1, 3, 224, 224))
    l2 = count_ops(resnet18(kind="adder", norm="l2"), (1, 3, 224, 224))
    # CNN: 1.8G mul / 1.8G add
    assert _close(cnn.mul, 1.8 * G) and _close(cnn.add, 1.8 * G)
    # l1-AdderNet: 0 mul in the replaced layers / 3.6G add
    assert l1.body_mul == 0 and _close(l1.add, 3.6 * G)
    # l2-AdderNet: 1.8G mul / 3.6G add
    assert _close(l2.mul, 1.8 * G) and _close(l2.add, 3.6 * G)
    # first and last layers are the same multiplication layers in all three
    assert cnn.first_last_mul == l1.first_last_mul == l2.first_last_mul
    assert [l.name for l in l1.layers if l.part != "body"] == ["conv1", "fc"]
    assert l1.body_add == 2 * cnn.body_mul and l2.body_mul == cnn.body_mul


def test_resnet20_layer_counts_exact():
    r = count_ops(resnet20(), (1, 3, 32, 32))
    first = r.layers[0]
    assert (first.name, first.kind, first.part) == ("conv1", "conv", "first")
    assert first.mul == first.add == 32 * 32 * 16 * 27
    block = next(l for l in r.layers if l.name == "layer1.0.conv1")
    assert block.kind == "adder_l1" and block.mul == 0 and block.add == 2 * 32 * 32 * 16 * 144
    ds = next(l for l in r.layers if l.name == "layer2.0.downsample.0")
    assert ds.output_shape == (1, 32, 16, 16) and ds.add == 2 * 16 * 16 * 32 * 16
    last = r.layers[-1]
    assert (last.name, last.part, last.mul) == ("fc", "last", 64 * 10)
    assert len(r.layers) == 1 + 18 + 2 + 1  # conv1, 18 block layers, 2 shortcuts, fc
    assert r.body_add == 80_740_352 and r.mul == r.first_last_mul
    # counts scale with the batch
    assert count_ops(resnet20(), (4, 3, 32, 32)).add == 4 * r.add
    text = format_ops(r)
    assert "layer3.2.conv2" in text and "total" in text


def test_other_models_known_totals():
    assert _close(count_ops(resnet50(kind="cnn"), (1, 3, 224, 224)).mul, 4.1 * G)
    assert _close(count_ops(vgg_small(kind="cnn"), (1, 3, 32, 32)).mul, 0.61 * G)
    lenet = count_ops(lenet5_bn(kind="adder"), (1, 1, 28, 28))
    assert lenet.mul == 0 and _close(lenet.add, 2 * 0.42e6, 0.05)  # paper: ~435K MACs


def test_count_ops_leaves_the_model_intact():
    m = resnet20(kind="cnn", rng=np.random.default_rng(0))
    m.train()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    m.eval()
    before = m(x).data
    m.train()
    state = m.state_dict()
    count_ops(m, (1, 3, 32, 32))
    assert m.training
    assert all(np.array_equal(v, m.state_dict()[k]) for k, v in state.items())
    m.eval()
    assert np.array_equal(m(x).data, before)


def test_count_ops_errors():
    with pytest.raises(TypeError, match="model"):
        count_ops("resnet20", (1, 3, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        count_ops(resnet20(), (1, 3, 0, 32))
    with pytest.raises(ValueError, match="channels"):
        count_ops(resnet20(), (1, 1, 32, 32))
