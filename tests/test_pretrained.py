"""Issue 5 B.3: the authors' released ResNet-20 AdderNet checkpoint, read without PyTorch,
classifies the first 1,000 real CIFAR-10 test images with > 90% top-1 (reported: 91.8%).
Issue 12.5/12.7: examples/eval_pretrained.py's errors are one line with exit status 2, it has
the data fallbacks of train_cifar.py, and writes a few progress lines (not 100) into a log."""
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import shared_data_path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "eval_pretrained.py"


def _example():
    spec = importlib.util.spec_from_file_location("eval_pretrained", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrained_resnet20_first_1000_test_images(capsys):
    checkpoint = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    data_dir = shared_data_path("cifar-10-batches-py")
    r = _example().run([str(checkpoint), "--data-dir", str(data_dir), "--limit", "1000"])
    out = capsys.readouterr()
    assert r["images"] == 1000
    assert r["top1"] > 90.0, r
    assert r["top5"] >= r["top1"] and r["top5"] > 99.0, r
    assert "top-1" in out.out and "images/s" in out.out
    assert "img/s" in out.err  # the progress bar


def test_pretrained_checkpoint_loads_strictly():
    from addercore import io as aio
    from addercore.models import resnet20

    raw = aio.load_torch_checkpoint(shared_data_path("pretrained", "ResNet20-AdderNet.pth"))
    assert all(k.startswith("module.") for k in raw)
    state = aio.strip_prefix(raw)
    model = resnet20(10, kind="adder")
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert missing == [] and unexpected == []
    assert state["layer1.0.conv1.adder"].shape == (16, 16, 3, 3)
    assert state["bn2.running_var"].shape == (10,)
    assert np.all(np.isfinite(state["fc.weight"]))


def _cli(args, env=None, timeout=300):
    """Run the example as a user would: a subprocess, stderr a pipe (not a terminal). The
    checkout goes first on PYTHONPATH, as for the in-process tests (this tree, not an install)."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    full_env = dict(os.environ, PYTHONPATH=path, **(env or {}))
    return subprocess.run([sys.executable, str(EXAMPLE)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=Path(__file__).resolve().parents[1])


def _one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    line = [ln for ln in r.stderr.splitlines() if "error: " in ln]
    assert len(line) == 1, r.stderr
    for f in fragments:
        assert f in line[0], (f, r.stderr)


def test_cli_input_errors_are_one_line_with_status_2(tmp_path):
    checkpoint = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    data_dir = shared_data_path("cifar-10-batches-py")
    _one_line_error(_cli([tmp_path / "missing.pth", "--data-dir", data_dir]),
                    "checkpoint", "missing.pth", "not found")
    _one_line_error(_cli([checkpoint, "--data-dir", data_dir, "--limit", "0"]),
                    "--limit", "positive integer", "0")
    _one_line_error(_cli([checkpoint, "--data-dir", data_dir, "--batch-size", "0"]),
                    "--batch-size", "positive integer")
    npz = tmp_path / "checkpoint.npz"
    npz.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip, like a (tiny) .npz
    _one_line_error(_cli([npz, "--data-dir", data_dir]), "addercore .npz", "--eval-only")
    text = tmp_path / "notes.pth"
    text.write_text("# not a checkpoint\n")
    _one_line_error(_cli([text, "--data-dir", data_dir]), "notes.pth", "PyTorch checkpoint")


def test_cli_data_dir_errors_and_flags(tmp_path):
    checkpoint = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    typo = tmp_path / "cifar-10-batches-pyy"
    r = _cli([checkpoint, "--data-dir", typo])  # downloads are allowed, but not into a typo
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: CIFAR-10 data not found: {typo} does not exist" in r.stderr
    assert "--download" in r.stderr and not typo.exists()
    r = _cli(["--help"])
    assert r.returncode == 0
    for flag in ("--data-dir", "--download", "--no-download", "--limit", "--batch-size",
                 "$ADDERCORE_DATA", "~/.cache/addercore"):
        assert flag in r.stdout, flag
    r = _cli([checkpoint, "--download", "--no-download"])
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_cli_data_fallback_env_and_sparse_progress_in_a_log(tmp_path):
    """No --data-dir: $ADDERCORE_DATA is used (no download: HOME is empty, --no-download);
    stderr is a pipe, so the progress is a few plain lines, not 100 carriage returns."""
    checkpoint = shared_data_path("pretrained", "ResNet20-AdderNet.pth")
    data_dir = shared_data_path("cifar-10-batches-py")
    env = {"ADDERCORE_DATA": str(data_dir), "HOME": str(tmp_path)}
    r = _cli([checkpoint, "--limit", "100", "--batch-size", "4", "--no-download"], env=env)
    assert r.returncode == 0, r.stderr
    assert "images: 100  top-1: " in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if "img/s" in ln]
    assert "\r" not in r.stderr
    assert len(lines) == 10 and lines[-1].lstrip("[#. ]").startswith("100/100"), r.stderr  # of 25
    assert not (tmp_path / ".cache").exists()


def test_progress_line_tty_and_log(monkeypatch):
    from addercore._cli import Progress

    log = io.StringIO()
    bar = Progress(1000, log, every=10)
    for done in range(1, 1001):
        bar.update(done, f"{done}/1000")
    bar.close()
    assert log.getvalue().splitlines() == [f"{k}/1000" for k in range(100, 1001, 100)]

    class Tty(io.StringIO):
        def isatty(self):
            return True

    term = Tty()
    bar = Progress(7, term)
    for done in range(1, 8):
        bar.update(done, f"{done}/7")
    bar.close()
    assert term.getvalue() == "".join(f"\r{d}/7" for d in range(1, 8)) + "\n"
    log = io.StringIO()
    bar = Progress(3, log, every=10)  # fewer steps than percent buckets: every step, once
    for done in (1, 2, 3):
        bar.update(done, str(done))
    assert log.getvalue() == "1\n2\n3\n"
