"""examples/train_cifar.py as a new user meets it (issue 12.2, 12.6, 12.7): the header, the
backend, --help, --eval-only on a CNN checkpoint, a failed --resume, Ctrl-C twice, progress
output off a terminal, and examples/_bootstrap.py choosing the compiled addercore."""
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from addercore import io as aio
from addercore.train import Trainer, TrainConfig
from addercore.train.progress import Progress
from conftest import shared_data_path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "examples" / "train_cifar.py"


def _cli_module():
    spec = importlib.util.spec_from_file_location("train_cifar", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_states_each_default_once():
    out = subprocess.run([sys.executable, str(CLI), "--help"], capture_output=True, text=True,
                         check=True).stdout
    flat = " ".join(out.split())
    assert "(default: None)" not in flat and "(default: False)" not in flat
    assert not re.search(r"\(default: [^)]*\) \(default:", flat), flat
    assert "(default: all)" in flat and "(default: 400)" in flat and "(default: adder;" in flat


def test_header_names_cnn_without_norm_and_counts_right(tmp_path):
    cli = _cli_module()
    x = np.zeros((40, 3, 32, 32), np.uint8)
    y = np.arange(40) % 10
    t = Trainer(TrainConfig(kind="cnn", epochs=1, batch_size=8, max_steps_per_epoch=1,
                            out=str(tmp_path / "h")), (x, y), (x[:4], y[:4]))
    assert cli.header(t) == (f"resnet20 cnn on cifar10: 40 train / 4 test images, 1 epoch of "
                             f"1 step (batch 8), out {tmp_path / 'h'}")
    t = Trainer(TrainConfig(norm="l2", epochs=3, batch_size=8, out=str(tmp_path / "h")),
                (x, y), (x[:4], y[:4]))
    assert cli.header(t).startswith("resnet20 adder (l2) on cifar10: 40 train / 4 test "
                                    "images, 3 epochs of 5 steps (batch 8)")
    line = cli.backend_line()
    import addercore
    assert line.startswith(f"kernels: {addercore.backend()}")
    if addercore.backend() == "cython":
        from addercore.ops import fast
        assert f"cython ({fast.simd()})" in line


def test_numpy_backend_is_an_error_unless_asked_for(tmp_path, monkeypatch, capsys):
    cli = _cli_module()
    monkeypatch.setattr(cli.addercore, "backend", lambda: "numpy")
    monkeypatch.delenv("ADDERCORE_BACKEND", raising=False)
    argv = ["--out", str(tmp_path / "o"), "--no-download", "--data-dir", str(tmp_path / "none")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "numpy reference kernels" in err and "--allow-numpy-backend" in err
    assert not (tmp_path / "o").exists()
    # asked for: the run goes on (and stops at the missing data)
    assert cli.main(argv + ["--allow-numpy-backend"]) == 1
    assert "not found" in capsys.readouterr().err
    monkeypatch.setenv("ADDERCORE_BACKEND", "numpy")
    assert cli.main(argv) == 1


def _weights_file(path, kind):
    """A randomly initialised ResNet-20 of ``kind`` saved as addercore weights (the format
    --eval-only reads) with its recorded configuration -> (path, model)."""
    from addercore.models import resnet20

    model = resnet20(kind=kind, rng=np.random.default_rng(0))
    aio.save(path, {f"model.{k}": v for k, v in model.state_dict().items()},
             {"format": "addercore-weights", "config": TrainConfig(kind=kind).as_dict()})
    return path, model


def test_eval_only_uses_the_checkpoints_recorded_kind(tmp_path):
    data = shared_data_path("cifar-10-batches-py")
    ckpt, _ = _weights_file(tmp_path / "cnn.npz", "cnn")
    base = [sys.executable, str(CLI), "--data-dir", str(data), "--no-download", "--test-subset",
            "20", "--threads", "1", "--eval-only", str(ckpt)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(resnet20 cnn)" in r.stdout and "top-1 accuracy" in r.stdout
    r = subprocess.run(base + ["--kind", "adder"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 400
    assert "--kind adder (the checkpoint records 'cnn')" in r.stderr


def test_eval_only_with_precise_bn_reports_both_accuracies(tmp_path):
    # --eval-only --precise-bn N: the checkpoint's accuracy, then the accuracy with BatchNorm
    # statistics re-estimated on N training images (the same choice the training loop makes)
    from addercore.data import load_cifar10
    from addercore.nn import recalibrate_batchnorm
    from addercore.train import evaluate, precise_bn_batches

    data = shared_data_path("cifar-10-batches-py")
    ckpt, model = _weights_file(tmp_path / "adder.npz", "adder")
    r = subprocess.run([sys.executable, str(CLI), "--data-dir", str(data), "--no-download",
                        "--train-subset", "64", "--test-subset", "50", "--threads", "1",
                        "--eval-only", str(ckpt), "--precise-bn", "40", "--seed", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "top-1 accuracy" in lines[-2]
    assert "re-estimated on 40 training images" in lines[-1] and "seed 3" in lines[-1]
    train_x, _ = load_cifar10(data, train=True, download=False)
    test_x, test_y = load_cifar10(data, train=False, download=False)
    recalibrate_batchnorm(model, precise_bn_batches(train_x[:64], 40, 3, 256))
    loss, acc = evaluate(model, test_x[:50], test_y[:50])
    assert f"test loss {loss:.4f}, top-1 accuracy {100 * acc:.2f}%" in lines[-1]


def test_failed_resume_creates_and_writes_nothing(tmp_path):
    data = shared_data_path("cifar-10-batches-py")
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, str(CLI), "--data-dir", str(data), "--no-download",
                        "--train-subset", "16", "--test-subset", "8", "--out", str(out),
                        "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_ctrl_c_twice_exits_promptly_in_one_line(tmp_path):
    data = shared_data_path("cifar-10-batches-py")
    cmd = [sys.executable, str(CLI), "--data-dir", str(data), "--no-download",
           "--train-subset", "512", "--test-subset", "20", "--batch-size", "16", "--threads",
           "1", "--epochs", "1", "--out", str(tmp_path / "c"), "--log-interval", "0"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "step 1/" in line:
            break
    p.send_signal(signal.SIGINT)
    time.sleep(0.05)
    p.send_signal(signal.SIGINT)  # whether it lands in a step or in the checkpoint's write
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "Ctrl-C again to abort" in err


def test_sigterm_message_does_not_mention_ctrl_c_again():
    import signal as s
    t = Trainer.__new__(Trainer)  # only the handler's wording is under test
    t._stop_signal, t._saving = None, False
    t.progress = Progress(io.StringIO())
    t.stream = io.StringIO()
    t._handler(s.SIGTERM, None)
    assert "SIGTERM: finishing the current step" in t.stream.getvalue()
    assert "again" not in t.stream.getvalue()


def test_progress_off_a_terminal_is_a_line_per_interval_without_carriage_returns():
    stream = io.StringIO()
    p = Progress(stream, interval=30.0)
    for k in range(100):
        p.update(f"step {k + 1}/100", force=k == 99)
    p.end()
    text = stream.getvalue()
    assert "\r" not in text and text.splitlines() == ["step 1/100", "step 100/100"]


def _run_bootstrap(tmp_path, site=None):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    code = ("import sys; sys.path.insert(0, %r); import _bootstrap, addercore; "
            "print(addercore.__file__); print(addercore.backend())" % str(ROOT / "examples"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bootstrap_prefers_an_installed_compiled_package(tmp_path):
    import addercore
    if addercore.backend() != "cython":
        pytest.skip("needs the compiled extension")
    site = tmp_path / "site"  # an "installed" compiled addercore
    site.mkdir()
    (site / "addercore").symlink_to(ROOT / "addercore")
    (site / "addercore_ext").symlink_to(ROOT / "addercore_ext")
    where, backend = _run_bootstrap(tmp_path, site)
    assert where.startswith(str(site)) and backend == "cython"
    # an installed but uncompiled one loses to the checkout's in-place build
    bare = tmp_path / "bare"
    (bare / "addercore_ext").mkdir(parents=True)
    (bare / "addercore_ext" / "__init__.py").write_text("")
    (bare / "addercore").symlink_to(ROOT / "addercore")
    where, backend = _run_bootstrap(tmp_path, bare)
    assert where.startswith(str(ROOT)) and backend == "cython"
    where, backend = _run_bootstrap(tmp_path)  # nothing installed: the checkout
    assert where.startswith(str(ROOT)) and backend == "cython"
