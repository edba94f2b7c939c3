"""Data-parallel training over MPI (addercore.distributed, addercore.train.distributed).

The pure parts (sharding, moment merging, sync-BN arithmetic on one rank, launcher detection)
run everywhere; the ``mpiexec -n 2`` runs (tens of seconds each) are marked slow. The ``mpiexec -n 2`` tests need mpi4py and an mpiexec (``pip install
".[mpi]"``): they are skipped with the reason when those are missing, except under ``CI=true``
(.ci/run installs the extra), where that is a failure.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_path

from addercore import functional as F
from addercore.data import BatchLoader, load_cifar10
from addercore.distributed import (MissingMPIError, ShardedBatchLoader, merge_moments,
                                   shard_bounds, sync_batch_norm2d, world_size_from_environment)
from addercore.distributed import comm as comm_module
from addercore.nn import BatchNorm2d
from addercore.tensor import Tensor
from addercore.threads import set_num_threads
from addercore.train import Trainer, TrainConfig
from addercore.train.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "mpi_worker.py"
CLI = ROOT / "examples" / "train_cifar.py"
TOL = 1e-10  # equivalence "up to rounding": |a - b| <= TOL · max(1, max|b|) per array


@pytest.fixture(autouse=True)
def one_thread():
    set_num_threads(1)


def _mpiexec():
    """The mpiexec next to this Python (the mpich wheel's), else on PATH; skip (or fail under
    CI=true) when mpi4py or mpiexec is missing."""
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    missing = []
    if importlib.util.find_spec("mpi4py") is None:
        missing.append("mpi4py")
    if exe is None:
        missing.append("mpiexec")
    if missing:
        msg = (f"{' and '.join(missing)} not installed: the MPI tests need the extra "
               '(pip install ".[mpi]")')
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI=true, so this is an error, not a skip")
        pytest.skip(msg)
    return exe


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def run_ranks(tmp_path, n, spec, timeout=600):
    """Run tests/mpi_worker.py on ``n`` ranks with ``spec``; return the CompletedProcess."""
    path = tmp_path / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(WORKER), str(path)],
                          capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def cifar(train_n, test_n):
    data = shared_data_path("cifar-10-batches-py")
    x, y = load_cifar10(data, train=True, download=False)
    xt, yt = load_cifar10(data, train=False, download=False)
    return (x[:train_n], y[:train_n]), (xt[:test_n], yt[:test_n]), str(data)


def assert_states_close(got, want, tol=TOL):
    assert sorted(got) == sorted(want)
    for k in want:
        a, b = np.asarray(got[k], dtype=np.float64), np.asarray(want[k], dtype=np.float64)
        assert a.shape == b.shape, k
        scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
        err = float(np.max(np.abs(a - b))) if b.size else 0.0
        assert err <= tol * scale, f"{k}: max |diff| {err:.3g} > {tol:g} × {scale:.3g}"


def model_and_optim(arrays):
    return {k: v for k, v in arrays.items() if k.startswith(("model.", "optim."))}


# -- pure parts ---------------------------------------------------------------------------------
def test_shard_bounds_partition_in_rank_order():
    for n in (0, 1, 7, 32, 33, 100):
        for size in (1, 2, 3, 4):
            bounds = [shard_bounds(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(bounds[r][1] == bounds[r + 1][0] for r in range(size - 1))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_sharded_loader_shares_make_up_one_process_batches():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(70, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 10, size=70)
    whole = list(BatchLoader(x, y, 32, augment=True, seed=5, prefetch=False, padding=2))
    shards = [list(ShardedBatchLoader(x, y, 32, r, 3, augment=True, seed=5, prefetch=False,
                                      padding=2)) for r in range(3)]
    assert len(whole) == 3 and all(len(s) == 3 for s in shards)
    for k, (xb, yb) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[k][0] for s in shards]), xb)
        np.testing.assert_array_equal(np.concatenate([s[k][1] for s in shards]), yb)
    loader = ShardedBatchLoader(x, y, 32, 1, 3)
    assert [loader.global_batch_size(k) for k in range(3)] == [32, 32, 6]
    assert loader.smallest_share() == 2 and loader.state_dict()["batch_size"] == 32


def test_merge_moments_matches_numpy_on_large_mean():
    rng = np.random.default_rng(0)
    parts = [rng.normal(-3000.0, 2.0, size=(n, 3)) for n in (5, 11, 1, 8)]
    rows = np.array([np.concatenate(([len(p)], p.mean(0), ((p - p.mean(0)) ** 2).sum(0)))
                     for p in parts])
    n, mean, m2 = merge_moments(rows, 3)
    allx = np.concatenate(parts)
    assert n == len(allx)
    np.testing.assert_allclose(mean, allx.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, allx.var(0), rtol=1e-11)


class _OneRank:
    """The two collectives sync-BN uses, for a world of one rank."""
    size, rank = 1, 0

    def allgather_rows(self, v, what=""):
        return np.asarray(v, dtype=np.float64)[None, :]

    def sum_rows(self, v, what=""):
        return np.asarray(v, dtype=np.float64)


@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (True, True)])
def test_sync_batch_norm_on_one_rank_equals_batch_norm(relu, residual):
    rng = np.random.default_rng(1)
    x = rng.normal(-50, 3, size=(4, 3, 5, 5))
    w, b = rng.normal(size=3), rng.normal(size=3)
    res = rng.normal(size=x.shape) if residual else None
    g = rng.normal(size=x.shape)
    outs = []
    for sync in (True, False):
        xt, wt, bt = Tensor(x, True), Tensor(w, True), Tensor(b, True)
        rt = Tensor(res, True) if residual else None
        rm, rv = np.zeros(3), np.ones(3)
        if sync:
            y = sync_batch_norm2d(xt, wt, bt, rm, rv, 0.1, 1e-5, _OneRank(), rt, relu)
        elif relu:
            y = F.batch_norm2d_relu(xt, wt, bt, rm, rv, True, 0.1, 1e-5, rt)
        else:
            y = F.batch_norm2d(xt, wt, bt, rm, rv, True, 0.1, 1e-5)
        y.backward(g)
        outs.append([y.data, xt.grad, wt.grad, bt.grad, rm, rv] + ([rt.grad] if residual else []))
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_world_size_from_launcher_environment():
    assert world_size_from_environment({}) == 1
    assert world_size_from_environment({"PMI_SIZE": "4", "PMI_RANK": "0"}) == 4
    assert world_size_from_environment({"OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert world_size_from_environment({"PMIX_RANK": "0", "SLURM_NTASKS": "8"}) == 8


def test_missing_mpi4py_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mpi(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    with pytest.raises(MissingMPIError, match=r'pip install "addercore\[mpi\]"'):
        comm_module.import_mpi()


# -- two ranks ----------------------------------------------------------------------------------
def _config(tmp_path, name, **kw):
    base = dict(epochs=1, batch_size=32, threads=1, test_batch_size=10, out=str(tmp_path / name))
    base.update(kw)
    return base


@pytest.mark.slow
def test_two_ranks_sync_bn_equal_one_process_float64(tmp_path):
    """2 ranks × 16 images per step with --sync-bn = 1 process × 32 images, over 3 steps:
    parameters, momentum buffers, running statistics, and the sharded evaluation."""
    train, test, data = cifar(96, 20)
    kw = _config(tmp_path, "mpi", dtype="float64", sync_bn=True)
    run_ranks(tmp_path, 2, {"data": data, "train_n": 96, "test_n": 20, "config": kw})
    got, got_meta = read_checkpoint(Path(kw["out"]) / "checkpoint.npz")
    ref = Trainer(TrainConfig(**dict(kw, out=str(tmp_path / "one"))), train, test)
    ref.fit()
    want, want_meta = read_checkpoint(ref.ckpt_path)
    assert got_meta["global_step"] == want_meta["global_step"] == 3
    assert_states_close(model_and_optim(got), model_and_optim(want))
    for key in ("train_loss", "test_loss", "test_acc", "train_acc"):
        assert abs(got_meta["history"][0][key] - want_meta["history"][0][key]) <= TOL, key


def emulate_per_rank_batchnorm(config, train, test, ranks=2):
    """One process that normalises each rank's share separately: per share, forward and
    backward of the share's mean loss weighted by share/batch (gradients add up), the running
    statistics from the same start, then averaged with the same weights; one optimiser step."""
    trainer = Trainer(config, train, test)
    model, opt = trainer.model, trainer.optimizer
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    for _, (xb, yb) in zip(range(config.max_steps_per_epoch), trainer.loader):
        start = [(m.running_mean.copy(), m.running_var.copy(), m.num_batches_tracked.copy())
                 for m in bns]
        mean = [[np.zeros(m.num_features), np.zeros(m.num_features)] for m in bns]
        opt.zero_grad()
        for r in range(ranks):
            lo, hi = shard_bounds(len(yb), r, ranks)
            weight = (hi - lo) / len(yb)
            for m, (rm, rv, nbt) in zip(bns, start):
                m.running_mean, m.running_var = rm.copy(), rv.copy()
                m.num_batches_tracked = nbt.copy()
            loss = F.cross_entropy(model(xb[lo:hi]), yb[lo:hi])
            loss.backward(np.asarray(weight))
            for acc, m in zip(mean, bns):
                acc[0] += weight * m.running_mean
                acc[1] += weight * m.running_var
        for acc, m in zip(mean, bns):
            m.running_mean, m.running_var = acc
        opt.step()
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in opt.state_dict().items()})
    return arrays


@pytest.mark.slow
def test_two_ranks_default_bn_equal_per_share_emulation_float64(tmp_path):
    train, test, data = cifar(96, 10)
    kw = _config(tmp_path, "mpi", dtype="float64", max_steps_per_epoch=3)
    run_ranks(tmp_path, 2, {"data": data, "train_n": 96, "test_n": 10, "config": kw})
    got, meta = read_checkpoint(Path(kw["out"]) / "checkpoint.npz")
    assert meta["global_step"] == 3
    want = emulate_per_rank_batchnorm(TrainConfig(**dict(kw, out=str(tmp_path / "emu"))),
                                      train, test)
    # the checkpoint's schedule advanced one epoch: compare everything but the lr
    got = {k: v for k, v in model_and_optim(got).items() if k != "optim.lr"}
    want = {k: v for k, v in want.items() if k != "optim.lr"}
    assert_states_close(got, want)


@pytest.mark.slow
def test_two_identical_two_rank_runs_give_bit_identical_checkpoints(tmp_path):
    _, _, data = cifar(64, 10)
    arrays, metas = [], []
    for name in ("a", "b"):
        kw = _config(tmp_path, name, max_steps_per_epoch=2)
        run_ranks(tmp_path, 2, {"data": data, "train_n": 64, "test_n": 10, "config": kw})
        a, m = read_checkpoint(Path(kw["out"]) / "checkpoint.npz")
        arrays.append(a)
        metas.append(m)
    assert sorted(arrays[0]) == sorted(arrays[1])
    for k in arrays[0]:
        assert arrays[0][k].dtype == arrays[1][k].dtype
        assert arrays[0][k].tobytes() == arrays[1][k].tobytes(), k
    timing = ("time", "elapsed", "saved_at", "per_s", "out")
    for m in metas:
        m.pop("saved_at"), m.pop("elapsed"), m["config"].pop("out")
        for row in m["history"]:
            for key in [k for k in row if any(t in k for t in timing)]:
                row.pop(key)
    assert metas[0] == metas[1]


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    """A 2-rank --sync-bn run stopped (by rank 0 alone asking) after global step 3 of 4 resumes
    in one process at epoch 2, step 2 and ends where an uninterrupted 1-process run ends."""
    train, test, data = cifar(64, 10)
    kw = _config(tmp_path, "run", dtype="float64", sync_bn=True, epochs=2)
    run_ranks(tmp_path, 2, {"data": data, "train_n": 64, "test_n": 10, "config": kw,
                            "request_stop_at": 2})
    arrays, meta = read_checkpoint(Path(kw["out"]) / "checkpoint.npz")
    assert meta["global_step"] == 3 and meta["epoch"] == 1
    assert meta["loader"]["epoch"] == 1 and meta["loader"]["batch"] == 1
    resumed = Trainer(TrainConfig(**kw), train, test)
    resumed.resume()
    assert resumed.global_step == 3
    resumed.fit()
    ref = Trainer(TrainConfig(**dict(kw, out=str(tmp_path / "one"))), train, test)
    ref.fit()
    got, got_meta = read_checkpoint(resumed.ckpt_path)
    want, want_meta = read_checkpoint(ref.ckpt_path)
    assert got_meta["global_step"] == want_meta["global_step"] == 4
    assert_states_close(model_and_optim(got), model_and_optim(want))


def _descendants(pid):
    """pids of the processes below ``pid`` (Linux /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _rank_pid(mpiexec_pid, rank):
    for pid in _descendants(mpiexec_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and b"train_cifar.py" in cmd:
            return pid
    return None


def _start_cli(tmp_path, data, timeout_s, *extra, epochs=3):
    """mpiexec -n 2 of the training CLI on 64 images (2 steps per epoch).  The tests that stop
    or kill a rank after the first checkpoint ask for many epochs: on a fast machine 3 epochs
    can end before the signal is sent (a rank that has exited cannot hang)."""
    out = tmp_path / "run"
    cmd = [_mpiexec(), "-n", "2", sys.executable, str(CLI), "--data-dir", data,
           "--epochs", str(epochs),
           "--train-subset", "64", "--test-subset", "10", "--batch-size", "32",
           "--threads", "1", "--out", str(out), "--comm-timeout", str(timeout_s), *extra]
    return out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=_env(), cwd=ROOT)


def _print_job_output(proc):
    """On a failure before the job's output was read: end the job and print what it wrote,
    with the processes it had (pytest shows a failing test's stdout)."""
    tree = []
    for pid in _descendants(proc.pid):
        try:
            tree.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes()[:120]))
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()
    try:
        out = proc.communicate(timeout=30)[0] or ""
    except (subprocess.TimeoutExpired, ValueError):  # ValueError: output already read
        out = ""
    print(f"job processes: {tree}\njob output (last 3000 characters):\n{out[-3000:]}")


def _wait_for_checkpoint(proc, path, limit=300):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() - t0 < limit, "no checkpoint written"
        time.sleep(0.2)
    time.sleep(0.5)  # (rank 0 writes it atomically: it is complete once it exists)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_rank_ends_the_job_and_leaves_the_checkpoint(tmp_path):
    _, _, data = cifar(64, 10)
    out, proc = _start_cli(tmp_path, data, 60, epochs=1000)
    try:
        _wait_for_checkpoint(proc, out / "checkpoint.npz")
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        text = proc.communicate(timeout=60)[0]  # the launcher ends the job at once
        assert time.monotonic() - t0 < 60
    except BaseException:
        _print_job_output(proc)
        raise
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode != 0
    assert "Killed" in text or "signal 9" in text or "KILLED" in text, text[-2000:]
    arrays, meta = read_checkpoint(out / "checkpoint.npz")  # complete and readable
    assert meta["epoch"] >= 1 and all(np.isfinite(a).all() for a in arrays.values()
                                      if a.dtype.kind == "f")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_hanging_rank_ends_the_job_after_the_comm_timeout(tmp_path):
    """A rank that stops answering (SIGSTOP) makes the other give up after --comm-timeout
    seconds with a message, and MPI_Abort ends the job."""
    _, _, data = cifar(64, 10)
    out, proc = _start_cli(tmp_path, data, 5, epochs=1000)
    try:
        _wait_for_checkpoint(proc, out / "checkpoint.npz")
        before = (out / "checkpoint.npz").read_bytes()
        pid = _rank_pid(proc.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        text = proc.communicate(timeout=120)[0]
        waited = time.monotonic() - t0
    except BaseException:
        _print_job_output(proc)
        raise
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode != 0
    assert "no answer from the other ranks for 5 s" in text, text[-2000:]
    assert "last complete checkpoint" in text
    assert waited < 60
    # the checkpoint on disk is a complete one (the one seen before, or a later complete one)
    after = (out / "checkpoint.npz").read_bytes()
    read_checkpoint(out / "checkpoint.npz")
    assert after == before or len(after) > 0


@pytest.mark.slow
def test_two_rank_resume_without_checkpoint_ends_cleanly(tmp_path):
    """--resume with no checkpoint under mpiexec: every rank ends with exit status 1 and the
    message saying what to do, before any run folder is created (not an MPI_Abort)."""
    _, _, data = cifar(64, 10)
    out, proc = _start_cli(tmp_path, data, 60, "--resume")
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, text[-3000:]
    assert "--resume: no checkpoint at" in text and "MPI_Abort" not in text, text[-3000:]
    assert not out.exists()
