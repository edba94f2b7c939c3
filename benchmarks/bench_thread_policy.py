"""One ResNet-20 training step (batch 256) under three thread policies: 1 thread; 2 OpenMP +
2 BLAS threads; 2 OpenMP threads with the BLAS pool pinned to 1 (OpenBLAS workers spin after a
GEMM and steal the second core from the next OpenMP region on a 2-core machine).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_thread_policy.py adder 2blas1
    (kind: adder | cnn; policy: 1 | 2 | 2blas1); prints images/s, best of 3 steps after a warm-up.
"""
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import addercore
from addercore import functional as F, models, optim

kind, policy = sys.argv[1], sys.argv[2]
model = models.resnet20(10, kind=kind)
opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
x = np.random.default_rng(0).standard_normal((256, 3, 32, 32)).astype(np.float32)
y = np.arange(256) % 10
addercore.set_num_threads(1 if policy == "1" else 2)
if policy == "2blas1":
    threadpool_limits(1, user_api="blas")


def step():
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


step()
times = []
for _ in range(3):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(f"{kind} policy={policy} train img/s {256 / min(times):.1f}")
