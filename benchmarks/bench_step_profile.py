"""Where the second core idles in one ResNet-20 training step: per-op 1- vs 2-thread times.

Every compiled/numpy op that :mod:`addercore.functional` calls (``addercore.ops.*``), the
engine's gradient accumulation (``Tensor._accumulate``: the ``grad + grad`` of tensors with two
consumers, e.g. a block input feeding conv1 and the shortcut), the optimiser (``SGD.step``,
``zero_grad``) and the recomputation of released activations are wrapped with a timer that
records wall time and process CPU time (all threads).  Whatever the step spends outside these
wrappers is the Python/engine overhead between ops ("python: forward"/"python: backward").

Rows are grouped by op and input shape (so every distinct layer geometry of ResNet-20 is one
row, summed over the layers that share it).  Columns, medians over ``--rounds`` interleaved
rounds (1 thread, 2 threads, 1 thread, ...), each round one timed step after a warm-up step:

  * ``ms 1t`` / ``ms 2t``: wall time in the step at 1 / 2 threads;
  * ``x``: speed-up (``ms 1t / ms 2t``);
  * ``cpu/wall 2t``: CPU time over wall time at 2 threads -- about 2 for an op that keeps both
    cores busy, about 1 for a serial one (a loaded machine lowers it; OpenMP workers spinning
    after a parallel region raise it slightly);
  * ``idle ms``: ``2·ms 2t − ms 1t``, the core-milliseconds the second core is not doing this
    op's work at 2 threads (what perfect scaling would save is ``ms 2t − ms 1t/2 = idle/2``).

Wall times on a loaded machine are noisy; ``cpu/wall`` and the serial/parallel split are the
structural part.  Run from the repository root:

    PYTHONPATH=. python benchmarks/bench_step_profile.py --batch 256 --rounds 3
"""
import argparse
import functools
import os
import statistics
import sys
import threading
import time

import numpy as np


def _thread_clock(tid):
    # Linux: the CPU-time clock of any thread of this process (MAKE_THREAD_CPUCLOCK(tid, SCHED))
    return ((~tid) << 3) | 6


def thread_cpu_times():
    """{tid: CPU seconds} of every thread of this process (OpenMP workers included)."""
    out = {}
    for name in os.listdir("/proc/self/task"):
        try:
            out[int(name)] = time.clock_gettime(_thread_clock(int(name)))
        except OSError:  # the thread ended in between
            pass
    return out


class Timers:
    """Per (phase, op, shape): wall, CPU of the calling thread, CPU of the busiest other
    thread, CPU of all other threads, calls."""

    def __init__(self):
        self.rows = {}
        self.depth = 0      # nested wrappers (recompute inside an op's argument list) count once
        self.phase = "forward"
        self.main = threading.get_native_id()

    def wrap(self, name, fn, shape_of=None):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            key = (self.phase, name, shape_of(args) if shape_of else "")
            self.depth += 1
            c0, t0 = thread_cpu_times(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t1, c1 = time.perf_counter(), thread_cpu_times()
                self.depth -= 1
                used = {tid: c1[tid] - c0.get(tid, 0.0) for tid in c1}
                main = used.pop(self.main, 0.0)
                row = self.rows.setdefault(key, [0.0, 0.0, 0.0, 0.0, 0])
                row[0] += t1 - t0
                row[1] += main
                row[2] += max(used.values(), default=0.0)
                row[3] += sum(used.values())
                row[4] += 1
        return timed


def _shape_key(args):
    # the first array argument (the op's input) and, for layers, the weight's shape
    arrays = [a for a in args[:2] if isinstance(a, np.ndarray)]
    if not arrays:
        return ""
    text = "x".join(map(str, arrays[0].shape[1:]))
    if len(arrays) > 1 and arrays[1].ndim == 4:
        w = arrays[1].shape
        text += f" w{w[0]}x{w[1]}x{w[2]}x{w[3]}"
    return text


def instrument(timers):
    from addercore import ops, optim, tensor

    for name in ("adder2d_forward", "adder2d_backward", "conv2d_forward", "conv2d_backward",
                 "batch_norm2d_forward", "batch_norm2d_backward", "batch_norm2d_relu_forward",
                 "batch_norm2d_relu_backward", "batch_norm2d_relu_apply", "avg_pool2d_forward",
                 "avg_pool2d_backward", "relu_forward", "relu_backward", "linear_forward",
                 "linear_backward", "cross_entropy_forward", "cross_entropy_backward"):
        setattr(ops, name, timers.wrap(name, getattr(ops, name), _shape_key))
    tensor.Tensor._accumulate = timers.wrap(
        "Tensor._accumulate", tensor.Tensor._accumulate,
        lambda a: "" if a[1] is None else "x".join(map(str, np.shape(a[1])[1:])))
    optim.SGD.step = timers.wrap("SGD.step", optim.SGD.step)
    optim.SGD.zero_grad = timers.wrap("SGD.zero_grad", optim.SGD.zero_grad)


def measure(batch, rounds, threads=(1, 2), kind="adder"):
    """Per-op medians: {threads: {key: (wall, cpu, calls)}}, {threads: {phase: (wall, cpu)}}."""
    import addercore
    from addercore import functional as F
    from addercore.models import resnet20
    from addercore.optim import SGD
    from addercore.tensor import Tensor

    timers = Timers()
    instrument(timers)
    rng = np.random.default_rng(0)
    model = resnet20(num_classes=10, kind=kind, rng=np.random.default_rng(1))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model.train()

    def step():
        phases = {}
        for phase, fn in (("forward", lambda: F.cross_entropy(model(Tensor(x)), y)),
                          ("backward", None), ("optimiser", None)):
            timers.phase = phase
            c0, t0 = thread_cpu_times(), time.perf_counter()
            if phase == "forward":
                loss = fn()
            elif phase == "backward":
                opt.zero_grad()
                loss.backward()
            else:
                opt.step()
            t1, c1 = time.perf_counter(), thread_cpu_times()
            used = {tid: c1[tid] - c0.get(tid, 0.0) for tid in c1}
            main = used.pop(timers.main, 0.0)
            phases[phase] = (t1 - t0, main, max(used.values(), default=0.0),
                             sum(used.values()))
        return phases

    per_op = {n: [] for n in threads}
    per_phase = {n: [] for n in threads}
    for n in threads:  # warm-up: workspaces, momentum buffers
        with addercore.num_threads(n):
            step()
    for _ in range(rounds):
        for n in threads:
            with addercore.num_threads(n):
                time.sleep(0.2)  # park spinning pools between configurations
                timers.rows = {}
                phases = step()
                for phase, total in phases.items():
                    # the phase minus its ops: Python and engine code between the ops (per
                    # round, before taking medians)
                    inside = [sum(v[i] for (ph, _, _), v in timers.rows.items() if ph == phase)
                              for i in range(4)]
                    timers.rows[(phase, "python/engine between ops", "")] = tuple(
                        total[i] - inside[i] for i in range(4)) + (1,)
                per_phase[n].append(phases)
                per_op[n].append(timers.rows)

    def med(samples):
        # per key, the median of each field over the rounds (a key missing in a round counts 0)
        keys = set().union(*samples)
        width = {k: len(s[k]) for s in samples for k in s}
        return {k: tuple(statistics.median(s[k][i] if k in s else 0.0 for s in samples)
                         for i in range(width[k])) for k in keys}
    return ({n: med(per_op[n]) for n in threads}, {n: med(per_phase[n]) for n in threads})


def report(ops_, phases, batch, threads=(1, 2)):
    a, b = threads
    ms = 1e3
    head = (f"{'phase':9} {'op':26} {'input shape':19} {'calls':>5} | {'wall 1t':>7} "
            f"{'wall 2t':>7} | {'cpu 1t':>7} {'2t main':>7} {'2t wkr':>7} {'work':>5} "
            f"{'ideal':>5}")
    lines = [head]

    def row(label, r1, r2, calls=""):
        cpu1 = (r1[1] + r1[3]) * ms
        main2, wkr2, all2 = r2[1] * ms, r2[2] * ms, (r2[1] + r2[3]) * ms
        lines.append(f"{label} {calls:>5} | {r1[0] * ms:7.1f} {r2[0] * ms:7.1f} | {cpu1:7.1f} "
                     f"{main2:7.1f} {wkr2:7.1f} {all2 / max(cpu1, 1e-9):5.2f} "
                     f"{cpu1 / max(main2, wkr2, 1e-9):5.2f}")

    zero = (0.0,) * 5
    keys = sorted(ops_[a], key=lambda k: -(ops_[a][k][1] + ops_[a][k][3]))
    for k in keys:
        row(f"{k[0]:9} {k[1]:26} {k[2]:19}", ops_[a][k], ops_[b].get(k, zero),
            str(int(ops_[a][k][4])))
    total = [[sum(v[i] for v in phases[n].values()) for i in range(4)] for n in threads]
    row(f"{'step':9} {'total':26} {'':19}", total[0], total[1])
    lines.append(f"# batch {batch}: wall {batch / total[0][0]:.1f} img/s at {a} thread, "
                 f"{batch / total[1][0]:.1f} img/s at {b} (loaded machine: see cpu columns)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kind", choices=("adder", "cnn"), default="adder")
    args = p.parse_args(argv)
    import addercore
    print(f"# addercore backend {addercore.backend()}; numpy {np.__version__}; "
          f"load average at start {os.getloadavg()[0]:.1f}; cores {len(os.sched_getaffinity(0))}")
    ops_, phases = measure(args.batch, args.rounds, kind=args.kind)
    print(report(ops_, phases, args.batch))
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
