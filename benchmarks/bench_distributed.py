#!/usr/bin/env python
"""Data-parallel training speed: 1 process × T threads against N MPI ranks × 1 thread, and the
time a step spends communicating.

    python benchmarks/bench_distributed.py [--models resnet20 resnet56] [--batch 256]
                                           [--steps 3] [--ranks 2] [--threads 2]

Times the real training step (``Trainer._train_step`` / ``DistributedTrainer._train_step``:
forward, backward, the step's collectives, the SGD update) of a freshly initialised AdderNet on
CIFAR-10 images (../shared/data, else random images), after one warm-up step. Per model it
prints: images/s of one process with ``--threads`` threads, images/s of ``--ranks`` ranks with
one thread each (global batch ``--batch`` either way), and per step: the wall time the ranks
spent inside collectives (waiting for the slower rank included), and the time of the
gradient sum alone (``Communicator.sum_ordered`` on a gradient-sized float32 buffer, timed after
a barrier: the pure transfer + fixed-order add). Needs the MPI extra (pip install ".[mpi]").
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def images(n):
    data = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"
    if data.exists():
        from addercore.data import load_cifar10

        x, y = load_cifar10(data, train=True, download=False)
        return x[:n], y[:n], "CIFAR-10"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n),
            "random images")


def measure(model, batch, steps, threads, distributed):
    """Run in this process (one rank when ``distributed``); returns a dict of timings."""
    from addercore.train import Trainer, TrainConfig

    n = batch * (steps + 1)
    x, y, source = images(n)
    out = tempfile.mkdtemp(prefix="bench-dist-")
    config = TrainConfig(model=model, batch_size=batch, threads=threads, epochs=1, out=out,
                         test_batch_size=100)
    comm = None
    try:
        if distributed:
            from addercore.distributed import Communicator
            from addercore.train.distributed import DistributedTrainer

            comm = Communicator(timeout=600)
            trainer = DistributedTrainer(config, comm, (x, y), (x[:10], y[:10]))
        else:
            trainer = Trainer(config, (x, y), (x[:10], y[:10]))
        times, comm_s = [], []
        for k, (xb, yb) in enumerate(trainer.loader):
            if comm is not None:
                comm.barrier()
                c0 = comm.seconds
            t0 = time.perf_counter()
            trainer._train_step(xb, yb, 0, k)
            times.append(time.perf_counter() - t0)
            if comm is not None:
                comm_s.append(comm.seconds - c0)
            if k == steps:
                break
        result = {"model": model, "batch": batch, "threads": threads, "data": source,
                  "step_s": float(np.median(times[1:])), "ranks": comm.size if comm else 1}
        if comm is not None:
            result["comm_s"] = float(np.median(comm_s[1:]))
            params = sum(p.data.size for p in trainer.model.parameters())
            buf = np.random.default_rng(comm.rank).standard_normal(params).astype(np.float32)
            sums = []
            for _ in range(10):
                comm.barrier()
                t0 = time.perf_counter()
                comm.sum_ordered(buf)
                sums.append(time.perf_counter() - t0)
            result["gradient_sum_s"] = float(np.median(sums))
            result["params"] = int(params)
            if comm.rank != 0:
                return None
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="threads of the single process")
    p.add_argument("--worker", choices=("single", "rank"), help=argparse.SUPPRESS)
    p.add_argument("--single-only-for", nargs="*", default=["resnet20"],
                   help="models also timed in one process (the images/s comparison)")
    args = p.parse_args()
    if args.worker:
        r = measure(args.models[0], args.batch, args.steps,
                    1 if args.worker == "rank" else args.threads, args.worker == "rank")
        if r is not None:
            print("RESULT " + json.dumps(r), flush=True)
        return 0
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit('mpiexec not found: pip install ".[mpi]"')
    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load average at start {load:.1f}"
          + (" (a loaded machine: figures vary)" if load > 1.5 else ""))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, __file__, "--batch", str(args.batch), "--steps", str(args.steps)]
    for model in args.models:
        runs = []
        if model in args.single_only_for:
            runs.append(base + ["--models", model, "--worker", "single", "--threads",
                                str(args.threads)])
        runs.append([mpiexec, "-n", str(args.ranks)] + base + ["--models", model,
                                                               "--worker", "rank"])
        results = []
        for cmd in runs:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
            results.append(json.loads(lines[-1][7:]))
        for r in results:
            ips = r["batch"] / r["step_s"]
            line = (f"{model} batch {r['batch']}: {r['ranks']} rank(s) × {r['threads']} "
                    f"thread(s): step {1000 * r['step_s']:.0f} ms, {ips:.1f} img/s")
            if "comm_s" in r:
                line += (f"; in collectives {1000 * r['comm_s']:.1f} ms "
                         f"({100 * r['comm_s'] / r['step_s']:.1f}% of the step); gradient sum "
                         f"alone ({r['params']} float32) {1000 * r['gradient_sum_s']:.2f} ms "
                         f"({100 * r['gradient_sum_s'] / r['step_s']:.2f}%)")
            print(line, flush=True)
        if len(results) == 2:
            print(f"{model}: {args.ranks} ranks × 1 thread / 1 process × {args.threads} threads"
                  f" = {results[0]['step_s'] / results[1]['step_s']:.2f}x images/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
