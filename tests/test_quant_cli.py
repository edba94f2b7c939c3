"""CLI: `python -m addercore quantize` writes a loadable file; examples/eval_pretrained.py
evaluates it (--quantized) with today's final line; errors exit with status 2."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from addercore.__main__ import main as addercore_main
from addercore.quant import load

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "..", "shared", "data")
CKPT = os.path.join(DATA, "pretrained", "ResNet20-AdderNet.pth")
CIFAR = os.path.join(DATA, "cifar-10-batches-py")
needs_data = pytest.mark.skipif(not (os.path.exists(CKPT) and os.path.isdir(CIFAR)),
                                reason="released checkpoint / CIFAR-10 not available")
LINE = re.compile(r"^images: 40  top-1: \d+\.\d\d%  top-5: \d+\.\d\d%  time: .* images/s, .* "
                  r"backend, \d+ threads\)$")


@needs_data
def test_quantize_then_eval(tmp_path, capsys):
    out = tmp_path / "m6.npz"
    rc = addercore_main(["quantize", CKPT, "--data-dir", CIFAR, "--out", str(out), "--bits", "6",
                         "--calib-images", "16"])
    assert rc == 0 and out.exists()
    q = load(out)
    assert q.bits == 6 and q.graph["scheme"] == "shared"
    assert q.arrays["layer1.0.conv1.filters"].dtype == np.uint8
    capsys.readouterr()
    # refuses to overwrite without --overwrite, before calibrating, in the CLI's words
    before = out.read_bytes()
    assert addercore_main(["quantize", CKPT, "--data-dir", CIFAR, "--out", str(out),
                           "--calib-images", "16"]) == 2
    cap = capsys.readouterr()
    assert "exists; add --overwrite" in cap.err and "calibrating" not in cap.out
    assert out.read_bytes() == before
    # an --out folder that does not exist: refused up front
    assert addercore_main(["quantize", CKPT, "--data-dir", CIFAR, "--out",
                           str(tmp_path / "no" / "m.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    script = os.path.join(ROOT, "examples", "eval_pretrained.py")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    res = subprocess.run([sys.executable, script, "--data-dir", CIFAR, "--quantized", str(out),
                          "--limit", "40"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr
    assert LINE.match(res.stdout.strip().splitlines()[-1]), res.stdout
    # the integer file given where a float checkpoint goes: told to use --quantized
    res = subprocess.run([sys.executable, script, str(out), "--data-dir", CIFAR, "--limit", "40"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 2 and f"--quantized {out}" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@needs_data
def test_quantize_bad_bits(tmp_path, capsys):
    rc = addercore_main(["quantize", CKPT, "--data-dir", CIFAR, "--out", str(tmp_path / "x.npz"),
                         "--bits", "17", "--calib-images", "4"])
    assert rc == 2 and "bits must be an int in [2, 16]" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
