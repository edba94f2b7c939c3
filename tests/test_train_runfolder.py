"""The run folder and failure handling of the training loop (issues 12.1, 13): one run per
folder, a lock, best.npz consistent with the checkpoint after SIGKILL, stale temporary files,
non-finite state never saved, a full disk on SIGTERM, unusable --out paths, a step too large
for memory. Small: synthetic data, 1-2 steps per epoch; subprocesses where a real kill or
signal is the point."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from addercore import io as aio
from addercore.threads import num_threads
from addercore.train import (NonFiniteStateError, RunExistsError, RunFolder,
                             RunFolderBusyError, RunFolderError, StepMemoryError, Trainer, TrainConfig,
                             check_step_memory, step_bytes, train)
from conftest import shared_data_path, synthetic_cifar

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "examples" / "train_cifar.py"
QUIET = open(os.devnull, "w")


@pytest.fixture(autouse=True)
def _one_thread():
    with num_threads(1):
        yield


_synthetic = synthetic_cifar  # tests/conftest.py


DATA, TEST = _synthetic(8, 0), _synthetic(4, 1)


def _cfg(out, **kw):
    base = dict(epochs=1, batch_size=8, out=str(out), seed=3, test_batch_size=4, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def _epochs(out):
    return [json.loads(l)["epoch"] for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_new_run_over_an_old_one_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out, epochs=2), DATA, TEST, stream=QUIET)
    before = (out / "checkpoint.npz").read_bytes()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match=r"--resume .*--overwrite"):
        train(_cfg(out, epochs=1), DATA, TEST, stream=QUIET)
    assert (out / "checkpoint.npz").read_bytes() == before  # untouched
    assert _epochs(out) == [1, 2]
    train(_cfg(out, epochs=1), DATA, TEST, stream=QUIET, overwrite=True)
    assert _epochs(out) == [1]  # never 1, 2, 1
    assert aio.load(out / "checkpoint.npz")[1]["config"]["epochs"] == 1
    assert (out / "notes.txt").read_text() == "mine"  # only the run's files are deleted
    # a fresh folder, or one without run files, needs neither
    (tmp_path / "empty").mkdir()
    train(_cfg(tmp_path / "empty"), DATA, TEST, stream=QUIET)


def test_cli_refuses_existing_run_in_one_line(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    r = subprocess.run([sys.executable, str(CLI), "--out", str(out), "--no-download",
                        "--data-dir", str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "already holds a run (metrics.jsonl)" in r.stderr and "--overwrite" in r.stderr


def test_folder_is_locked_while_a_run_holds_it(tmp_path):
    out = tmp_path / "run"
    a = Trainer(_cfg(out), DATA, TEST, stream=QUIET)
    a.open_run()
    b = Trainer(_cfg(out), DATA, TEST, stream=QUIET, overwrite=True)
    with pytest.raises(RunFolderBusyError, match="in use by another training run"):
        b.fit()
    # another process is refused too
    code = ("import sys; from addercore.train import RunFolder\n"
            f"try:\n    RunFolder({str(out)!r}).open()\n"
            "except Exception as e:\n    print(type(e).__name__); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3 and "RunFolderBusyError" in r.stdout
    a.fit()  # the holder trains; fit releases the lock at its end
    assert not a.folder.locked
    b2 = Trainer(_cfg(out, epochs=2), DATA, TEST, stream=QUIET, overwrite=True)
    b2.fit()
    assert _epochs(out) == [1, 2]


def test_stale_tmp_files_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out, epochs=1), DATA, TEST, stream=QUIET)
    stale = [out / ".checkpoint.npz.0123456789ab.tmp", out / ".best.npz.ba9876543210.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 100)
    keep = out / ".mine.tmp"  # not a name atomic_open makes
    keep.write_bytes(b"y")
    t = Trainer(_cfg(out, epochs=1), DATA, TEST, stream=QUIET)
    t.resume()
    t.close()
    assert not any(p.exists() for p in stale) and keep.exists()


_KILL_BETWEEN = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from addercore.threads import set_num_threads
    from addercore.train import Trainer, TrainConfig
    set_num_threads(1)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 8)
    x = np.clip(((y[:, None] * 25 + np.array([0, 80, 160])) % 256)[:, :, None, None]
                + rng.normal(0, 30, (8, 3, 32, 32)), 0, 255).astype(np.uint8)
    cfg = TrainConfig(epochs=3, batch_size=8, out=sys.argv[1], seed=3, test_batch_size=4,
                      lr=0.05)
    t = Trainer(cfg, (x, y), (x[:4], y[:4]), stream=sys.stderr)
    original = t._write_best
    def write_best():
        if t.best_epoch >= 2:  # the checkpoint naming this best epoch is on disk already
            os.kill(os.getpid(), signal.SIGKILL)
        return original()
    t._write_best = write_best
    import addercore.train.loop as loop
    calls = []
    def rising_accuracy(*args, **kwargs):  # every epoch improves: best.npz is written each time
        calls.append(1)
        return 1.0, len(calls) / 10
    loop.evaluate = rising_accuracy
    t.fit()
""")


def test_sigkill_between_checkpoint_and_best_npz_is_recovered(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", _KILL_BETWEEN, str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    _, ckpt = aio.load(out / "checkpoint.npz")
    _, best = aio.load(out / "best.npz")
    assert ckpt["best_epoch"] == 2 and best["epoch"] == 1  # the torn state of the issue
    x, y = _driver_data()
    t = Trainer(TrainConfig(epochs=3, batch_size=8, out=str(out), seed=3, test_batch_size=4,
                            lr=0.05), (x, y), (x[:4], y[:4]), stream=QUIET)
    t.resume()
    t.close()
    arrays, best = aio.load(out / "best.npz")
    ck_arrays, ckpt = aio.load(out / "checkpoint.npz")
    assert best["epoch"] == ckpt["best_epoch"] == 2 and best["test_acc"] == ckpt["best_acc"] == 0.2
    assert sorted(arrays) == sorted(k[len("best."):] for k in ck_arrays if k.startswith("best."))
    for k, v in arrays.items():
        assert np.array_equal(v, ck_arrays["best." + k]), k
    # the weights of epoch 2 are the model of the checkpoint written at the end of epoch 2
    for k, v in arrays.items():
        assert np.array_equal(v, ck_arrays[k]), k


def _driver_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 8)
    x = np.clip(((y[:, None] * 25 + np.array([0, 80, 160])) % 256)[:, :, None, None]
                + rng.normal(0, 30, (8, 3, 32, 32)), 0, 255).astype(np.uint8)
    return x, y


def test_nonfinite_batchnorm_statistics_with_finite_loss_are_never_saved(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out, epochs=1), DATA, TEST, stream=QUIET)
    t = Trainer(_cfg(out, epochs=2), DATA, TEST, stream=QUIET, overwrite=True)
    t.model.conv1.weight.data *= np.float32(1e30)  # conv outputs ~1e32: variance overflows
    with np.errstate(all="ignore"), pytest.raises(NonFiniteStateError,
                                                  match=r"bn1\.running_var .*loss, [0-9.]+, is "):
        t.fit()
    # overwrite=True deleted the old run; no checkpoint was written with infinite statistics
    assert not (out / "checkpoint.npz").exists()
    # skip_nonfinite: the batch is skipped, the statistics restored
    t = Trainer(_cfg(tmp_path / "skip", skip_nonfinite=True), DATA, TEST, stream=QUIET)
    t.model.conv1.weight.data *= np.float32(1e30)
    before = dict(t.model.named_buffers())
    before = {k: np.array(v, copy=True) for k, v in before.items()}
    with np.errstate(all="ignore"):
        t.fit()
    assert t.history[0]["skipped_steps"] == 1
    for k, v in t.model.named_buffers():
        assert np.array_equal(v, before[k]), k


def test_checkpoint_refused_when_a_parameter_is_nonfinite(tmp_path):
    t = Trainer(_cfg(tmp_path / "p"), DATA, TEST, stream=QUIET)
    t.open_run()
    t.model.fc.weight.data[0, 0] = np.inf
    with pytest.raises(NonFiniteStateError, match=r"fc\.weight.*not saved"):
        t.save_checkpoint()
    t.close()
    assert not (tmp_path / "p" / "checkpoint.npz").exists()
    assert t.nonfinite_state() == ["fc.weight"]


def test_out_naming_a_file_or_unwritable_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a directory"):
        Trainer(_cfg(f / "sub"), DATA, TEST, stream=QUIET)
    r = subprocess.run([sys.executable, str(CLI), "--out", str(f), "--no-download",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: --out {f}: {f} is a file, not a directory; "
                                "choose another --out")
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(RunFolderError, match=f"--out {ro}: not writable"):
                train(_cfg(ro), DATA, TEST, stream=QUIET)
        finally:
            ro.chmod(0o755)


def test_step_memory_estimate_and_refusal(tmp_path):
    # the figure of benchmarks/RESULTS.md: batch 256 of ResNet-20 float32 ~ 330 MB
    assert step_bytes("resnet20", 256) == pytest.approx(330e6, rel=1e-6)
    assert step_bytes("resnet20", 256, "float64") == pytest.approx(660e6, rel=1e-6)
    # ResNet-56: (16384 + 18*28672) / (16384 + 6*28672) activation elements per image
    assert step_bytes("resnet56", 1) / step_bytes("resnet20", 1) == pytest.approx(
        (16384 + 18 * 28672) / (16384 + 6 * 28672))
    need = step_bytes("resnet20", 50000)
    assert need == pytest.approx(50000 * 330e6 / 256, rel=1e-6)
    with pytest.raises(StepMemoryError, match=r"needs about 64\.5 GB, but only 8\.0 GB .*"
                                              r"--batch-size 6206 or less"):
        check_step_memory("resnet20", 50000, available=8e9)
    assert check_step_memory("resnet20", 256, available=8e9) == step_bytes("resnet20", 256)
    # the CLI says it before loading anything (VGG-small float64: ~314 GB at batch 50000)
    r = subprocess.run([sys.executable, str(CLI), "--model", "vgg_small", "--dtype", "float64",
                        "--batch-size", "50000", "--out", str(tmp_path / "m"), "--no-download",
                        "--data-dir", str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs about 313." in r.stderr and "GB of memory is available" in r.stderr
    assert not (tmp_path / "m").exists()


def test_sigterm_on_a_full_disk_exits_143_with_a_message(tmp_path):
    """RLIMIT_FSIZE makes every write past 64 KiB fail (EFBIG), as a full disk does (ENOSPC):
    the checkpoint cannot be written when SIGTERM asks for it."""
    import resource

    data = shared_data_path("cifar-10-batches-py")
    out = tmp_path / "full"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    cmd = [sys.executable, str(CLI), "--data-dir", str(data), "--no-download",
           "--train-subset", "256", "--test-subset", "20", "--batch-size", "16", "--threads",
           "1", "--epochs", "1", "--out", str(out), "--log-interval", "0"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    for line in p.stderr:
        if "step 1/" in line:
            break
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err
    assert "checkpoint was NOT saved: cannot write" in err and "checkpoint.npz" in err
    # whatever temporary file the failed write left, the next start removes it
    folder = RunFolder(out)
    folder.open(resume=True)
    folder.close()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
