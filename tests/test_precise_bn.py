"""BatchNorm re-estimation (issue 12.4): ``nn.recalibrate_batchnorm`` against a float64 numpy
reference, its use in training (both accuracies, bit-exact resume), and bn_diagnostic.py."""
import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_cifar

from addercore import nn, no_grad
from addercore import io as aio
from addercore.tensor import Tensor
from addercore.threads import num_threads
from addercore.train import METRIC_FIELDS, Trainer, TrainConfig, evaluate, load_weights

ROOT = Path(__file__).resolve().parents[1]
QUIET = open(os.devnull, "w")


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


def _bn_ref(x, w, b, eps):
    """Training-mode BatchNorm in float64: batch mean, biased variance."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[None, :, None, None] + b[None, :, None, None]


def test_recalibrate_gives_exact_population_statistics():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=rng, dtype=np.float64),
                          nn.BatchNorm2d(4, dtype=np.float64), nn.ReLU(),
                          nn.Adder2d(4, 5, 3, padding=1, rng=rng, dtype=np.float64),
                          nn.BatchNorm2d(5, dtype=np.float64))
    model[1].weight.data[:] = rng.uniform(0.5, 2, 4)
    model[1].bias.data[:] = rng.normal(size=4)
    x = rng.normal(size=(12, 3, 6, 6))
    batches = [x[:4], x[4:8], (x[8:], np.zeros(4))]  # arrays, or (inputs, labels) pairs
    weights = {k: v.copy() for k, v in model.state_dict().items() if "running" not in k}
    model.eval()
    assert nn.recalibrate_batchnorm(model, batches) == 12
    assert not model.training  # mode restored
    # reference: the first BatchNorm sees conv(x); the second sees the adder layer's output
    # of each batch normalised with that batch's own statistics (training mode)
    with no_grad():
        c1 = [model[0](Tensor(xb)).data for xb in (x[:4], x[4:8], x[8:])]
        h = [np.maximum(_bn_ref(c, model[1].weight.data, model[1].bias.data, 1e-5), 0)
             for c in c1]
        a2 = [model[3](Tensor(hb)).data for hb in h]
    for bn, outs in ((model[1], c1), (model[4], a2)):
        allv = np.concatenate(outs).transpose(1, 0, 2, 3).reshape(bn.num_features, -1)
        np.testing.assert_allclose(bn.running_mean, allv.mean(axis=1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(bn.running_var, allv.var(axis=1, ddof=1), rtol=1e-10)
        assert int(bn.num_batches_tracked) == 0  # not counted as training
    for k, v in weights.items():  # parameters unchanged
        assert np.array_equal(model.state_dict()[k], v), k


def test_recalibrate_refuses_empty_or_no_batchnorm():
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        nn.recalibrate_batchnorm(nn.Sequential(nn.ReLU()), [np.zeros((1, 1, 2, 2))])
    with pytest.raises(ValueError, match="batches is empty"):
        nn.recalibrate_batchnorm(nn.Sequential(nn.BatchNorm2d(2)), [])


_synthetic = synthetic_cifar  # tests/conftest.py


def test_training_reports_both_accuracies_and_resumes_bit_exactly(tmp_path):
    data, test = _synthetic(16, 0), _synthetic(8, 1)
    cfg = TrainConfig(epochs=2, batch_size=8, out=str(tmp_path / "p"), seed=3,
                      test_batch_size=8, lr=0.05, precise_bn=12)
    plain = TrainConfig(**{**cfg.as_dict(), "precise_bn": 0, "out": str(tmp_path / "q")})
    a = Trainer(cfg, data, test, stream=QUIET)
    a.fit()
    b = Trainer(plain, data, test, stream=QUIET)
    b.fit()
    # the re-estimation leaves training untouched: same weights and running statistics
    for k, v in b.model.state_dict().items():
        assert np.array_equal(a.model.state_dict()[k], v), k
    rows = [json.loads(l) for l in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert set(rows[0]) == set(METRIC_FIELDS) and METRIC_FIELDS[:13] == tuple(
        ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "steps",
         "skipped_steps", "train_time_s", "train_images_per_s", "eval_time_s",
         "eval_images_per_s", "elapsed_s"])  # old fields first, unchanged
    assert [r["test_acc"] for r in rows] == [r["test_acc"] for r in b.history]
    assert all(r["precise_bn_test_acc"] is not None for r in rows)
    assert all(r["precise_bn_test_acc"] is None for r in b.history)
    # best.npz holds the re-estimated statistics: evaluating it gives the reported accuracy
    best = max(rows, key=lambda r: r["precise_bn_test_acc"])
    model = a.model.__class__((3, 3, 3))
    meta = load_weights(model, tmp_path / "p" / "best.npz")
    assert meta["epoch"] == best["epoch"] and "precise BN" in meta["batchnorm_statistics"]
    loss, acc = evaluate(model, *test, batch_size=8)
    assert acc == best["precise_bn_test_acc"] and loss == pytest.approx(
        best["precise_bn_test_loss"], rel=1e-6)
    # the batches: 12 training images in two batches of 6 (array_split of 12 by batch 8)
    assert [len(xb) for xb in a.precise_bn_batches()] == [6, 6]


def test_bn_diagnostic_runs_on_the_new_api(tmp_path):
    from conftest import shared_data_path
    from addercore.data import load_cifar10
    from addercore.models import resnet20

    data = shared_data_path("cifar-10-batches-py")
    ckpt = tmp_path / "w.npz"
    model = resnet20(rng=np.random.default_rng(0))
    aio.save(ckpt, {f"model.{k}": v for k, v in model.state_dict().items()}, {})
    spec = importlib.util.spec_from_file_location("bn_diagnostic",
                                                  ROOT / "docs" / "results" / "bn_diagnostic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = io.StringIO()
    r = mod.main([str(ckpt), "--data-dir", str(data), "-n", "20", "--recalibrate", "40"],
                 stream=out)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert list(r["layers"]) == bns and len(out.getvalue().splitlines()) == len(bns) + 3
    x, y = load_cifar10(data, train=False, download=False)
    _, acc = evaluate(model, x[:20], y[:20], batch_size=10)
    assert r["eval_acc"] == pytest.approx(100 * acc)  # an independent evaluation
    # fresh weights: running var is the initial 1 everywhere
    assert all(row[1] == 1.0 for row in r["layers"].values())
    assert 0 <= r["recalibrated_acc"] <= 100 and 0 <= r["batch_stats_acc"] <= 100
