"""Issue 12.8: a plain ``pytest`` leaves the multi-minute tests (marked ``slow``) out and says
so; ``-m slow`` runs them, and CI=true runs everything (tests/conftest.py)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).resolve().parent / "conftest.py"


def _collect(tmp_path, *args, ci=None):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci is not None:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                        "no:cacheprovider", "-p", "no:hypothesispytest", *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return {line.split("::")[-1] for line in r.stdout.splitlines() if "::" in line}, r.stdout


def test_plain_run_leaves_slow_tests_out_and_says_how_to_run_them(tmp_path):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: minutes\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\ndef test_fast():\n    pass\n\n"
        "@pytest.mark.slow\ndef test_long():\n    pass\n")
    names, out = _collect(tmp_path)
    assert names == {"test_fast"} and "1 slow test(s) left out" in out and "-m slow" in out
    assert _collect(tmp_path, "-m", "slow")[0] == {"test_long"}
    assert _collect(tmp_path, ci="true")[0] == {"test_fast", "test_long"}
