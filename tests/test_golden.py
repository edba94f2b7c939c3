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
    assert "total: 70/70 passed" in out and "max abs err" in out

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
              "conv2d_k5s3p2_bias_f32", "batch_norm2d_train_adder_like_f32",
              "adder2d_l1_groups2_dil2_k3s1p2_f32", "conv2d_groups2_dil2x1_k3s1p21_f64"]
    argv = [str(GOLDEN)] + [a for name in select for a in ("--select", name)]
    assert module.main(argv) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------------------------
# Hostile or damaged sets (issue 13): confined paths, regular files, bounded sizes, digests
# --------------------------------------------------------------------------------------------
def _small_set(tmp_path, name="g"):
    """A copy of two committed cases with their own manifest."""
    d = tmp_path / name
    d.mkdir()
    manifest = golden.load_manifest(GOLDEN)
    keep = [e for e in manifest["cases"]
            if e["name"] in ("conv2d_k1s2p0_f64", "batch_norm2d_eval_f32")]
    for e in keep:
        shutil.copy(GOLDEN / e["file"], d / e["file"])
    manifest["cases"] = keep
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return d, manifest


def _with_file(d, manifest, index, file_value):
    manifest["cases"][index]["file"] = file_value
    (d / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "/dev/zero", "a/../../x.npz",
                                 "..\\secret.npz", ""])
def test_manifest_paths_outside_the_folder_are_refused(tmp_path, capsys, bad):
    d, manifest = _small_set(tmp_path)
    _with_file(d, manifest, 0, bad)
    with pytest.raises(ValueError, match=r"manifest.json: cases\[0\] \('conv2d_k1s2p0_f64'\): "
                                         r"'file' (must be a non-empty|.*(absolute|'\.\.'))"):
        golden.verify(d)
    assert main(["golden", "verify", str(d), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("addercore: error: ") and err.count("\n") == 1 and "'file'" in err


def test_symlink_leaving_the_folder_is_refused(tmp_path):
    d, manifest = _small_set(tmp_path)
    outside = tmp_path / "outside.npz"
    shutil.copy(GOLDEN / "conv2d_k1s2p0_f64.npz", outside)
    (d / "conv2d_k1s2p0_f64.npz").unlink()
    os.symlink(outside, d / "conv2d_k1s2p0_f64.npz")
    results = golden.verify(d)
    assert not results[0].ok and "outside" in results[0].message and results[1].ok
    # a link that stays inside the folder is fine
    (d / "conv2d_k1s2p0_f64.npz").unlink()
    os.rename(outside, d / "real.npz")
    os.symlink("real.npz", d / "conv2d_k1s2p0_f64.npz")
    assert golden.verify(d)[0].ok


def test_devices_and_non_regular_files_are_never_read(tmp_path):
    d, manifest = _small_set(tmp_path)
    (d / "conv2d_k1s2p0_f64.npz").unlink()
    os.symlink("/dev/zero", d / "conv2d_k1s2p0_f64.npz")  # leaves the folder: refused
    (d / "batch_norm2d_eval_f32.npz").unlink()
    os.mkfifo(d / "batch_norm2d_eval_f32.npz")  # inside, but a FIFO: refused without blocking
    results = golden.verify(d)
    assert [r.ok for r in results] == [False, False]
    assert "outside" in results[0].message
    assert "not a regular file" in results[1].message
    # and the manifest itself must be a regular file
    (d / "manifest.json").unlink()
    os.mkfifo(d / "manifest.json")
    with pytest.raises(ValueError, match="not a regular file"):
        golden.verify(d)


def test_sizes_are_bounded_before_reading(tmp_path):
    d, _ = _small_set(tmp_path)
    results = golden.verify(d, max_file_bytes=1000)
    assert all(not r.ok and "more than the 1000-byte limit" in r.message for r in results)
    # a candidate whose zip declares more than the bound is refused before inflating
    cand = tmp_path / "c"
    cand.mkdir()
    np.savez_compressed(cand / "conv2d_k1s2p0_f64.npz", output=np.zeros(10**6))
    assert os.path.getsize(cand / "conv2d_k1s2p0_f64.npz") < 100_000
    results = golden.verify(d, candidate_dir=cand, max_file_bytes=1_000_000)
    assert "declares" in results[0].message and "limit" in results[0].message


def test_candidate_paths_are_confined_to_the_candidate_folder(tmp_path):
    d, manifest = _small_set(tmp_path)
    cand = tmp_path / "c"
    cand.mkdir()
    good = tmp_path / "port_outputs.npz"
    arrays = golden.read_npz(GOLDEN / "conv2d_k1s2p0_f64.npz")
    golden.write_npz(good, {k: arrays[k] for k in manifest["cases"][0]["outputs"]})
    os.symlink(good, cand / "conv2d_k1s2p0_f64.npz")  # a correct file, but outside cand
    results = golden.verify(d, candidate_dir=cand, select=["conv2d_*"])
    assert not results[0].ok and "candidate file refused" in results[0].message
    os.unlink(cand / "conv2d_k1s2p0_f64.npz")
    shutil.copy(good, cand / "conv2d_k1s2p0_f64.npz")
    assert golden.verify(d, candidate_dir=cand, select=["conv2d_*"])[0].ok


@pytest.mark.parametrize("damage,match", [
    (lambda m: m["cases"][0].pop("file"), r"cases\[0\] \('conv2d_k1s2p0_f64'\): key 'file' is missing"),
    (lambda m: m["cases"][1].update(file=7), r"cases\[1\] \('batch_norm2d_eval_f32'\): 'file' must be a string, got int"),
    (lambda m: m["cases"][0].update(outputs="output"), r"'outputs' must be a list"),
    (lambda m: m["cases"][0]["tolerance"].update(rtol="big"), r"tolerance\['rtol'\] must be a finite number"),
    (lambda m: m["cases"][0]["tolerance"].update(atol=-1), r"tolerance\['atol'\] must be a finite number >= 0"),
    (lambda m: m["cases"][0].update(sha256="xyz"), r"'sha256' must be 64 lowercase hex digits"),
    (lambda m: m["cases"][0].update(dtype="float16"), r"'dtype' must be 'float32' or 'float64'"),
    (lambda m: m.update(cases={"a": 1}), r"'cases' must be a list"),
    (lambda m: m["cases"].__setitem__(0, [1]), r"cases\[0\] must be an object"),
    (lambda m: m["cases"].append(dict(m["cases"][0])), r"appears twice"),
])
def test_damaged_manifest_is_a_value_error_naming_file_and_problem(tmp_path, capsys, damage,
                                                                   match):
    d, manifest = _small_set(tmp_path)
    damage(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=match) as exc:
        golden.verify(d)
    assert str(d / "manifest.json") in str(exc.value)
    assert main(["golden", "verify", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json" in err


def test_manifest_not_json_or_deeply_nested(tmp_path, capsys):
    d, _ = _small_set(tmp_path)
    (d / "manifest.json").write_bytes(b"{\"format\": ")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        golden.load_manifest(d)
    (d / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="manifest.json: not valid JSON|must hold a JSON object"):
        golden.load_manifest(d)
    assert main(["golden", "verify", str(d)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_manifest_digest_printed_and_checked(tmp_path, capsys):
    digest = golden.manifest_digest(GOLDEN)
    assert digest == golden.COMMITTED_SMALL_SET_DIGEST  # update both when regenerating
    sel = ["--select", "conv2d_k1s2p0_*", "--quiet"]
    assert main(["golden", "verify", str(GOLDEN), "--expect-digest", "committed"] + sel) == 0
    out = capsys.readouterr().out
    assert f"manifest sha256: {digest} (the committed small set) (checked" in out
    assert main(["golden", "verify", str(GOLDEN), "--expect-digest", digest.upper()] + sel) == 0
    capsys.readouterr()
    # a loosened tolerance lets garbage pass, but the digest gives it away
    d = tmp_path / "g"
    shutil.copytree(GOLDEN, d)
    manifest = json.loads((d / "manifest.json").read_text())
    for e in manifest["cases"]:
        e["tolerance"].update(rtol=1e9, atol=1e9)
    (d / "manifest.json").write_text(json.dumps(manifest))
    cand = tmp_path / "c"
    cand.mkdir()
    arrays = golden.read_npz(GOLDEN / "conv2d_k1s2p0_f64.npz")
    golden.write_npz(cand / "conv2d_k1s2p0_f64.npz",
                     {k: np.zeros_like(arrays[k]) + 7 for k in ("output", "grad_input",
                                                                 "grad_weight")})
    assert main(["golden", "verify", str(d), "--candidate", str(cand), "--select",
                 "conv2d_k1s2p0_f64", "--quiet"]) == 0  # garbage passes the edited set...
    out = capsys.readouterr().out
    edited = golden.manifest_digest(d)
    assert edited != digest and f"manifest sha256: {edited}\n" in out  # ...with another digest
    assert main(["golden", "verify", str(d), "--candidate", str(cand), "--select",
                 "conv2d_k1s2p0_f64", "--expect-digest", "committed"]) == 2  # ...not this
    err = capsys.readouterr().err
    assert "is not the expected" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="64 hex digits"):
        golden.verify(GOLDEN, expect_digest="abc")


def test_generate_writes_every_file_atomically(tmp_path, monkeypatch):
    """Every file of a set goes through addercore.io's atomic writer (fsync + rename)."""
    from addercore import io as aio
    from addercore.golden import files

    written = []

    def spy(path, data):
        written.append(os.path.basename(os.fspath(path)))
        return aio.atomic_write_bytes(path, data)

    monkeypatch.setattr(files, "atomic_write_bytes", spy)
    golden.generate(tmp_path, select=["batch_norm2d_eval_f32"])
    assert written == ["batch_norm2d_eval_f32.npz", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == written  # no temporary files left
    assert golden.verify(tmp_path)[0].ok
