"""Memory does not grow over a long training loop (issue 6): the autograd graph is freed every
step (by reference counting alone: no reference cycles), and neither the kernels' cached
workspaces nor the optimiser leak buffers.  1,000 steps of a small adder network, < 30 s."""
import gc
import os
import tracemalloc
import weakref

import numpy as np

import addercore
from addercore import functional as F
from addercore import nn
from addercore.optim import SGD

STEPS = 1000


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _small_net():
    nn.manual_seed(0)
    return nn.Sequential(
        nn.Adder2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Adder2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Adder2d(8, 16, (1, 3), padding=(0, 1)), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16, 10),
    )


def test_training_step_memory_does_not_grow():
    model = _small_net()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 4))
               for _ in range(8)]
    probe = {}

    def step(i):
        x, t = batches[i % len(batches)]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        probe["loss"] = weakref.ref(loss)
        return float(loss.item())

    with addercore.num_threads(1):  # one thread: fast and steady on a loaded CI machine
        _run(step, probe)


def _run(step, probe):
    for i in range(20):  # warm-up: workspaces, momentum buffers, caches
        step(i)

    gc.collect()
    gc.disable()  # the graph must be freed by reference counting alone
    tracemalloc.start()
    try:
        # bookkeeping preallocated, so that it does not show up as growth itself
        step_peaks = np.zeros(STEPS, np.int64)
        currents = np.zeros(STEPS, np.int64)
        rss = np.zeros(STEPS // 100, np.int64)
        for i in range(STEPS):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            step(i)
            assert probe["loss"]() is None, f"step {i}: the loss Tensor (and its graph) is still alive"
            current, peak = tracemalloc.get_traced_memory()
            step_peaks[i] = peak - before
            currents[i] = current
            if i % 100 == 99:
                rss[i // 100] = _rss_bytes()
    finally:
        tracemalloc.stop()
        gc.enable()

    first, last = step_peaks[:100], step_peaks[-100:]
    # peak of one step: constant (same shapes, same work), up to small allocator noise
    assert max(last) <= max(first) * 1.02 + 4096, (max(first), max(last))
    # memory held between steps: no growth from step 100 to step 1000
    growth = currents[-1] - currents[99]
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes over {STEPS - 100} steps"
    # RSS (includes anything tracemalloc cannot see, e.g. C allocations): flat within 4 MiB
    assert rss[-1] - rss[0] < 4 * 2**20, (rss // 1024).tolist()
    assert gc.collect() < 100  # no garbage cycles were left behind either


def test_no_reference_cycles_in_graph():
    """An op's output is freed as soon as the last reference goes, even with gc disabled."""
    w = nn.Adder2d(3, 4, 3, padding=1, dtype=np.float64)
    gc.disable()
    try:
        x = addercore.Tensor(np.ones((2, 3, 5, 5)), requires_grad=True)
        y = F.relu(w(x))
        loss = y.sum()
        refs = [weakref.ref(t) for t in (y, loss)]
        loss.backward()
        del y, loss
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
