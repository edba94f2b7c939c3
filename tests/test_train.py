"""Training loop: exact resume (bit for bit), metrics/checkpoint files, NaN handling, CLI.

The slow test trains ResNet-20 AdderNet on 2,000 real CIFAR-10 images and checks it learns.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from addercore import io as aio
from addercore.threads import num_threads
from addercore.models import resnet20
from addercore.train import (METRIC_FIELDS, NonFiniteLossError, Trainer, TrainConfig,
                             TrainingInterrupted, evaluate, load_weights, train)
from conftest import shared_data_path, synthetic_cifar

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "examples" / "train_cifar.py"
TIMING = {"train_time_s", "train_images_per_s", "eval_time_s", "eval_images_per_s", "elapsed_s"}


@pytest.fixture(autouse=True)
def _one_thread():
    """One kernel thread: tiny batches gain nothing from two, and CI machines are shared."""
    with num_threads(1):
        yield


_synthetic = synthetic_cifar  # tests/conftest.py


def _config(tmp_path, name, **kw):
    base = dict(epochs=2, batch_size=8, out=str(tmp_path / name), seed=3, test_batch_size=16,
                lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def _strip(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def _assert_same_state(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k  # bit for bit
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sorted(oa) == sorted(ob)
    for k in oa:
        assert np.array_equal(oa[k], ob[k]), k


@pytest.mark.parametrize("stop_at", [2, 3])  # end of epoch 1 / middle of epoch 2
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, stop_at):
    data, test = _synthetic(16, 0), _synthetic(8, 1)  # 2 steps per epoch
    full = Trainer(_config(tmp_path, "full"), data, test, stream=open(os.devnull, "w"))
    full.fit()

    cfg = _config(tmp_path, "cut")
    first = Trainer(cfg, data, test, stream=open(os.devnull, "w"))
    original_step = first._train_step

    def step_then_stop(*args):
        out = original_step(*args)
        if first.global_step + 1 == stop_at:  # global_step is incremented after the call
            first.request_stop()
        return out

    first._train_step = step_then_stop
    with pytest.raises(TrainingInterrupted) as info:
        first.fit()
    assert info.value.checkpoint == first.ckpt_path and first.ckpt_path.exists()
    assert first.global_step == stop_at

    second = Trainer(cfg, data, test, stream=open(os.devnull, "w"))
    second.resume()
    summary = second.fit()
    _assert_same_state(full, second)
    assert _strip(second.history) == _strip(full.history)
    assert summary["global_step"] == full.global_step == 4
    rows = [json.loads(l) for l in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert _strip(rows) == _strip(full.history)  # no duplicated or missing epochs


def test_outputs_metrics_best_and_eval(tmp_path):
    data, test = _synthetic(32, 0), _synthetic(20, 1)
    cfg = _config(tmp_path, "run", epochs=2, batch_size=16, lr=0.1)
    summary = train(cfg, data, test, stream=open(os.devnull, "w"))
    out = Path(cfg.out)
    assert {"checkpoint.npz", "best.npz", "metrics.jsonl", "metrics.csv"} <= {p.name for p in out.iterdir()}
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and set(rows[0]) == set(METRIC_FIELDS)
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(METRIC_FIELDS) and len(csv_lines) == 3
    # cosine schedule, set once per epoch: lr(e) = 0.05 (1 + cos(pi e / 2))
    np.testing.assert_allclose([r["lr"] for r in rows], [0.1, 0.05])
    best = max(rows, key=lambda r: r["test_acc"])
    assert summary["best_test_acc"] == best["test_acc"] and summary["best_epoch"] == best["epoch"]
    model = resnet20()
    meta = load_weights(model, out / "best.npz")
    assert meta["epoch"] == best["epoch"]
    _, acc = evaluate(model, *test, batch_size=10)
    assert acc == pytest.approx(best["test_acc"])
    arrays, meta = aio.load(out / "checkpoint.npz")
    assert meta["epoch"] == 2 and meta["partial"] is None and "optim.momentum_buffer.0" in arrays


def test_resume_refuses_other_settings_and_missing_checkpoint(tmp_path):
    data, test = _synthetic(16, 0), _synthetic(8, 1)
    cfg = _config(tmp_path, "a", epochs=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(cfg, data, test, stream=open(os.devnull, "w")).resume()
    train(cfg, data, test, stream=open(os.devnull, "w"))
    other = _config(tmp_path, "a", epochs=1, lr=0.2)
    with pytest.raises(ValueError, match="lr: checkpoint 0.05, now 0.2"):
        Trainer(other, data, test, stream=open(os.devnull, "w")).resume()


def test_nonfinite_loss_stops_or_skips(tmp_path):
    data, test = _synthetic(16, 0), _synthetic(8, 1)
    t = Trainer(_config(tmp_path, "nan", epochs=1), data, test, stream=open(os.devnull, "w"))
    t.model.fc.weight.data[:] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1/2 .*Last good checkpoint: none"):
        t.fit()
    t = Trainer(_config(tmp_path, "skip", epochs=1, skip_nonfinite=True), data, test,
                stream=open(os.devnull, "w"))
    t.model.fc.weight.data[:] = np.nan
    before = t.model.state_dict()
    t.fit()
    assert t.history[0]["skipped_steps"] == 2 and t.history[0]["steps"] == 0
    after = t.model.state_dict()
    for k in before:  # no update, BatchNorm statistics restored
        if not k.startswith("fc."):
            assert np.array_equal(before[k], after[k]), k


def test_config_validation_names_the_setting(tmp_path):
    for kw, msg in [({"model": "resnet21"}, "model must be one of"), ({"epochs": 0}, "epochs"),
                    ({"lr": -1.0}, "lr must be"), ({"kind": "x"}, "kind"),
                    ({"train_subset": 0}, "train_subset"), ({"dtype": "float16"}, "dtype")]:
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**kw).validate()


def test_cli_help_explains_every_option():
    out = subprocess.run([sys.executable, str(CLI), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for opt in ("--dataset", "--data-dir", "--no-download", "--model", "--kind", "--norm",
                "--epochs", "--batch-size", "--lr", "--eta", "--momentum", "--weight-decay",
                "--threads", "--seed", "--train-subset", "--test-subset", "--out", "--resume",
                "--eval-only", "--dtype", "--skip-nonfinite"):
        assert opt in out
    assert "400" in out and "256" in out and "0.0005" in out


def test_cli_missing_data_is_a_message_not_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, str(CLI), "--data-dir", str(tmp_path / "nothing"),
                        "--no-download", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not found" in r.stderr and "nothing" in r.stderr


def test_cli_real_data_run_resume_and_eval_only(tmp_path):
    data = shared_data_path("cifar-10-batches-py")
    out = tmp_path / "cli"
    base = [sys.executable, str(CLI), "--data-dir", str(data), "--no-download",
            "--train-subset", "64", "--test-subset", "50", "--batch-size", "32", "--threads", "1",
            "--out", str(out)]
    r = subprocess.run(base + ["--epochs", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "final test accuracy" in r.stdout and "epoch 1/1" in r.stderr
    r = subprocess.run(base + ["--epochs", "1", "--resume"], capture_output=True, text=True)
    assert r.returncode == 0 and "resumed" in r.stderr  # already finished: nothing to do
    r = subprocess.run(base + ["--eval-only", str(out / "best.npz")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "top-1 accuracy" in r.stdout


def test_cli_sigint_saves_resumable_checkpoint(tmp_path):
    data = shared_data_path("cifar-10-batches-py")
    out = tmp_path / "sig"
    cmd = [sys.executable, str(CLI), "--data-dir", str(data), "--no-download",
           "--train-subset", "512", "--test-subset", "20", "--batch-size", "16", "--threads", "1",
           "--epochs", "1", "--out", str(out), "--log-interval", "0"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # wait for the first training step
        if "step 1/" in line:
            break
    p.send_signal(2)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    arrays, meta = aio.load(out / "checkpoint.npz")
    assert meta["partial"]["steps"] >= 1 and meta["loader"]["batch"] >= 1


@pytest.mark.slow
def test_resnet20_addernet_learns_real_cifar10(tmp_path):
    """2,000 real training images, 480 steps of batch 25 (6 epochs, no augmentation: this is a
    does-it-learn check, not a generalisation study), 1,000 real test images; > 25% (chance 10%).
    About 2-3 minutes on 2 idle cores."""
    from addercore.data import load_cifar10

    data = shared_data_path("cifar-10-batches-py")
    x, y = load_cifar10(data, train=True, download=False)
    xt, yt = load_cifar10(data, train=False, download=False)
    cfg = TrainConfig(epochs=6, batch_size=25, lr=0.1, out=str(tmp_path / "slow"), seed=0,
                      augment=False)
    t0 = time.monotonic()
    with num_threads(2):
        t = Trainer(cfg, (x[:2000], y[:2000]), (xt[:1000], yt[:1000]), stream=sys.stderr)
        summary = t.fit()
    print(f"slow test: {time.monotonic() - t0:.0f} s; test accuracy per epoch "
          f"{[round(r['test_acc'], 3) for r in t.history]}")
    assert t.global_step == 480
    assert summary["final_test_acc"] > 0.25, t.history


def test_curves_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    data, test = _synthetic(8, 0), _synthetic(4, 1)
    cfg = _config(tmp_path, "plot", epochs=1)
    train(cfg, data, test, stream=open(os.devnull, "w"))
    assert (Path(cfg.out) / "curves.png").stat().st_size > 0
