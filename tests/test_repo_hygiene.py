"""Issue 12.9: .gitignore ignores no tracked file, and the README's outputs (golden_out/,
training runs/ wherever started) are ignored. Skipped outside a git checkout."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git(*args):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          timeout=60)


def test_no_tracked_file_is_ignored():
    r = _git("ls-files", "-ci", "--exclude-standard")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", f"tracked but ignored:\n{r.stdout}"


def test_outputs_of_the_readme_commands_are_ignored():
    paths = ["golden_out/manifest.json", "runs/cifar/checkpoint.npz",
             "examples/runs/cifar/metrics.csv", "docs/results/some_run/best.npz",
             "addercore_ext/_adder.cpython-311-x86_64-linux-gnu.so", "model_int8.npz"]
    r = _git("check-ignore", "--no-index", *paths)
    assert sorted(r.stdout.split()) == sorted(paths), r.stdout + r.stderr
    kept = ["docs/results/some_run/checkpoint.npz", "examples/train_cifar.py"]
    r = _git("check-ignore", "--no-index", *kept)
    assert r.stdout == "", r.stdout
