"""Golden test vectors (issue 5 A): addercore reproduces the committed set, generation is
byte-identical, ``verify --candidate`` tells a correct port from a wrong one, exit statuses."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import addercore
from addercore import golden
from addercore.__main__ import main
from addercore._backend import use_backend

GOLDEN = Path(__file__).resolve().parent / "golden"


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir())}


def test_committed_set_matches_case_list():
    manifest = golden.load_manifest(GOLDEN)
    assert manifest["format"] == "addercore-golden" and manifest["format_version"] == 1
    names = [c["name"] for c in manifest["cases"]]
    assert names == [c["name"] for c in golden.cases(small=True)]
    ops = {c["op"] for c in manifest["cases"]}
    assert ops == {"adder2d", "conv2d", "batch_norm2d", "resnet_cifar"}
    for entry in manifest["cases"]:
        for key in ("name", "op", "file", "params", "dtype", "seed", "tolerance"):
            assert key in entry
    size = sum(p.stat().st_size for p in GOLDEN.iterdir())
    assert size < 4 * 2**20, size


def test_addercore_reproduces_committed_set():
    results = golden.verify(GOLDEN)
    failed = [(r.name, r.message) for r in results if not r.ok]
    assert not failed


def test_committed_set_strict_on_both_backends():
    """ℓ1 forward (and the small-integer 'ties' cases) are bit-exact on every backend."""
    for name in ("numpy", addercore.backend()):
        with use_backend(name):
            results = golden.verify(GOLDEN, strict=True, ops=["adder2d"])
        assert all(r.ok for r in results), [(r.name, r.message) for r in results if not r.ok]


def test_generation_is_byte_identical_for_any_thread_count(tmp_path):
    with addercore.num_threads(1):
        golden.generate(tmp_path / "a", small=True)
    with addercore.num_threads(2):
        golden.generate(tmp_path / "b", small=True)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    # and a fresh generation reproduces the committed inputs and verifies against it
    committed = golden.read_npz(GOLDEN / "adder2d_l1_large_f32.npz")
    fresh = golden.read_npz(tmp_path / "a" / "adder2d_l1_large_f32.npz")
    for key in ("x", "weight", "grad_output"):
        np.testing.assert_array_equal(committed[key], fresh[key])


def _candidate_from_golden(dst):
    """A 'port' that outputs exactly the golden values (outputs only, as a port would)."""
    manifest = golden.load_manifest(GOLDEN)
    os.makedirs(dst, exist_ok=True)
    for entry in manifest["cases"]:
        arrays = golden.read_npz(GOLDEN / entry["file"])
        golden.write_npz(os.path.join(dst, entry["file"]),
                         {k: arrays[k] for k in entry["outputs"]})
    return manifest


def test_verify_candidate_pass_and_fail(tmp_path, capsys):
    cand = tmp_path / "port"
    _candidate_from_golden(cand)
    assert main(["golden", "verify", str(GOLDEN), "--candidate", str(cand), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "total: 60/60 passed" in out and "max abs err" in out

    # within tolerance: a relative perturbation far below the stated rtol still passes
    f = cand / "conv2d_k3s1p1_f32.npz"
    arrays = golden.read_npz(f)
    arrays["output"] = arrays["output"] * np.float32(1 + 1e-6)
    golden.write_npz(f, arrays)
    assert main(["golden", "verify", str(GOLDEN), "--candidate", str(cand), "--quiet",
                 "--select", "conv2d_*"]) == 0

    # one wrong element in one array fails that case, and only that case
    f = cand / "adder2d_l1_k5s1p2_f64.npz"
    arrays = golden.read_npz(f)
    arrays["grad_input"].flat[7] += 1e-6
    golden.write_npz(f, arrays)
    results = golden.verify(GOLDEN, candidate_dir=cand)
    bad = [r for r in results if not r.ok]
    assert [r.name for r in bad] == ["adder2d_l1_k5s1p2_f64"]
    assert "grad_input" in bad[0].message and bad[0].max_abs == pytest.approx(1e-6)
    assert main(["golden", "verify", str(GOLDEN), "--candidate", str(cand), "--quiet"]) == 1
    capsys.readouterr()

    # ℓ1 forward off by one ulp: within tolerance, but not bit-exact under --strict
    f = cand / "adder2d_l1_resnet_layer1_f32.npz"
    arrays = golden.read_npz(f)
    arrays["output"].flat[3] = np.nextafter(arrays["output"].flat[3], np.float32(0))
    golden.write_npz(f, arrays)
    sel = ["--select", "adder2d_l1_resnet_layer1_f32", "--quiet"]
    assert main(["golden", "verify", str(GOLDEN), "--candidate", str(cand)] + sel) == 0
    assert main(["golden", "verify", str(GOLDEN), "--candidate", str(cand), "--strict"] + sel) == 1

    # missing arrays, wrong shapes and missing files fail
    f = cand / "batch_norm2d_train_f64.npz"
    arrays = golden.read_npz(f)
    del arrays["running_var_updated"]
    arrays["grad_bias"] = arrays["grad_bias"][:-1]
    golden.write_npz(f, arrays)
    (cand / "resnet20_w4_cnn_sgd_step_f64.npz").unlink()
    results = {r.name: r for r in golden.verify(GOLDEN, candidate_dir=cand)}
    assert "running_var_updated: missing" in results["batch_norm2d_train_f64"].message
    assert "shape" in results["batch_norm2d_train_f64"].message
    assert "missing candidate file" in results["resnet20_w4_cnn_sgd_step_f64"].message
    capsys.readouterr()


def test_verify_detects_corrupt_golden_file(tmp_path):
    d = tmp_path / "g"
    shutil.copytree(GOLDEN, d)
    f = d / "conv2d_k1s2p0_f64.npz"
    data = bytearray(f.read_bytes())
    data[-100] ^= 1
    f.write_bytes(bytes(data))
    results = golden.verify(d, select=["conv2d_k1s2p0_f64"])
    assert not results[0].ok and "sha256" in results[0].message


def test_cli_errors_and_help(tmp_path, capsys):
    assert main(["golden", "verify", str(tmp_path)]) == 2  # no manifest
    assert "manifest.json" in capsys.readouterr().err
    assert main(["golden", "verify", str(GOLDEN), "--candidate", str(tmp_path / "nope")]) == 2
    assert main(["golden", "verify", str(GOLDEN), "--select", "no_such_case"]) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"format": "other"}))
    assert main(["golden", "verify", str(bad)]) == 2
    capsys.readouterr()
    for argv in (["--help"], ["golden", "--help"], ["golden", "verify", "--help"],
                 ["golden", "generate", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "--candidate" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["golden"])
    assert exc.value.code == 2


def test_python_dash_m_exit_status(tmp_path):
    """``python -m addercore`` end to end: generate a few cases, verify them (exit 0), then a
    broken candidate (exit 1)."""
    out = tmp_path / "g"
    run = [sys.executable, "-m", "addercore", "golden"]
    sel = ["--select", "adder2d_l1_full_hardtanh_k3s1p1_*", "--select", "batch_norm2d_eval_f32"]
    r = subprocess.run(run + ["generate", str(out)] + sel, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote 3 cases" in r.stdout
    r = subprocess.run(run + ["verify", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "total: 3/3 passed" in r.stdout
    cand = tmp_path / "c"
    cand.mkdir()
    golden.write_npz(cand / "batch_norm2d_eval_f32.npz", {"output": np.zeros(1)})
    r = subprocess.run(run + ["verify", str(out), "--candidate", str(cand)], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert "FAIL" in r.stdout


def test_write_npz_is_a_normal_npz(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array(2.5),
              "i": np.array([1, 2], dtype=np.int64)}
    data = golden.write_npz(tmp_path / "x.npz", arrays)
    assert golden.write_npz(tmp_path / "y.npz", dict(reversed(list(arrays.items())))) == data
    back = np.load(tmp_path / "x.npz")
    assert back.files == ["a", "b", "i"]
    assert back["a"].shape == () and back["b"].dtype == np.float32
    with pytest.raises(TypeError):
        golden.write_npz(tmp_path / "z.npz", {"o": np.array(["s"])})


def test_port_check_example(capsys):
    """examples/port_check.py: an independent naive port passes --strict on a few cases."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "port_check.py"
    spec = importlib.util.spec_from_file_location("port_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    select = ["adder2d_l1_ties_sign_sign_f32", "adder2d_l2_k2x5_s21_p02_f64",
              "conv2d_k5s3p2_bias_f32", "batch_norm2d_train_adder_like_f32"]
    argv = [str(GOLDEN)] + [a for name in select for a in ("--select", name)]
    assert module.main(argv) == 0
    capsys.readouterr()
