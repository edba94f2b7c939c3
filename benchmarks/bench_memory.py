"""Memory of AdderNet training with addercore (issue 6): peak RSS of a ResNet-20 training step
at batch 256, the largest temporary buffer of each adder layer call, and what the authors'
unfold formulation would materialise.

    python benchmarks/bench_memory.py [--batch 256] [--steps 2] [--dtype float32] [--markdown]

* Peak RSS: ``ru_maxrss`` of this process, before the first step (model, data, optimiser) and
  after each training step (forward + backward + SGD step); the first step also allocates the
  kernels' cached workspaces.
* Per adder layer (one row per distinct geometry of resnet20): the bytes tracemalloc sees
  allocated during one ``adder2d_forward`` and one ``adder2d_backward`` call beyond their
  outputs (the temporaries), with the cached workspaces already in place, and the bytes of
  those cached workspaces as measured after the layer's calls (``addercore.ops.fast`` keeps
  per-thread packed-patch tiles and per-slot filter-gradient partials).
* Unfold: the authors' PyTorch layer unfolds X to ``(K, P)`` and broadcasts
  ``|X_col[None] - W[:, :, None]|`` to a ``(Cout, K, P)`` tensor, ``P = N·Ho·Wo``: ``Cout·K·P``
  floats per layer call (and the same again for the backward's ``X - W`` difference).
"""
import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import addercore  # noqa: E402
from addercore import functional as F  # noqa: E402
from addercore import nn, ops  # noqa: E402
from addercore.optim import SGD  # noqa: E402


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def mib(nbytes):
    return nbytes / 2**20


def adder_layer_geometries(model, x):
    """Run one forward and record (name, layer, input shape) of every Adder2d."""
    records = []
    names = {id(m): name for name, m in model.named_modules()}
    original = nn.Adder2d.forward

    def recording(self, inp):
        records.append((names.get(id(self), "?"), self, inp.shape))
        return original(self, inp)

    nn.Adder2d.forward = recording
    try:
        with addercore.no_grad():
            model(x)
    finally:
        nn.Adder2d.forward = original
    return records


def traced_temporaries(fn, out_bytes):
    """(peak bytes allocated during fn() beyond its outputs, result)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return max(0, peak - out_bytes), result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    itemsize = dtype.itemsize

    from addercore.models import resnet20

    print(f"# addercore {addercore.__version__}, backend {addercore.backend()}, "
          f"threads {addercore.get_num_threads()}, dtype {dtype}, batch {args.batch}")
    rss_start = maxrss_mib()
    model = resnet20(10, kind="adder", dtype=dtype)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(dtype)
    t = rng.integers(0, 10, args.batch)
    params = sum(p.data.nbytes for p in model.parameters())
    rss_setup = maxrss_mib()

    step_rows = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        del loss
        step_rows.append((step + 1, time.perf_counter() - t0, maxrss_mib()))

    # ---- per-layer temporaries --------------------------------------------------------------
    records = adder_layer_geometries(model, x)
    seen = {}
    for name, layer, shape in records:
        key = (shape, layer.adder.data.shape, layer.stride, layer.padding)
        seen.setdefault(key, []).append(name)
    layer_rows = []
    for (shape, wshape, stride, padding), names in seen.items():
        xs = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(wshape).astype(dtype)
        n = shape[0]
        cout, cin, kh, kw = wshape
        ho = ops.output_size(shape[2], kh, stride[0], padding[0])
        wo = ops.output_size(shape[3], kw, stride[1], padding[1])
        k = cin * kh * kw
        p_all = n * ho * wo
        y_bytes = n * cout * ho * wo * itemsize
        g = rng.standard_normal((n, cout, ho, wo)).astype(dtype)
        fast = addercore._backend.fast_module()
        if fast is not None:
            fast.clear_workspaces()
        ops.adder2d_forward(xs, w, stride, padding)  # warm: cached workspaces in place
        ops.adder2d_backward(xs, w, g, stride, padding)
        # the kernels' cached workspaces (fast.py keeps them per Python thread)
        workspace = 0 if fast is None else sum(
            a.nbytes for a in vars(fast._local).values() if isinstance(a, np.ndarray))
        fwd_tmp, _ = traced_temporaries(lambda: ops.adder2d_forward(xs, w, stride, padding),
                                        y_bytes)
        bwd_tmp, _ = traced_temporaries(lambda: ops.adder2d_backward(xs, w, g, stride, padding),
                                        xs.nbytes + w.nbytes)
        unfold = cout * k * p_all * itemsize
        layer_rows.append(dict(
            layers=", ".join(names), x=shape, w=wshape, stride=stride, K=k, P=p_all,
            fwd_tmp=fwd_tmp, bwd_tmp=bwd_tmp, workspace=workspace,
            largest=max(fwd_tmp, bwd_tmp, workspace), unfold=unfold,
            x_col=k * p_all * itemsize,
        ))

    # ---- report ---------------------------------------------------------------------------
    def out(line=""):
        print(line)

    out()
    out(f"Peak RSS (ru_maxrss): interpreter {rss_start:.0f} MiB; after model + batch + optimiser "
        f"{rss_setup:.0f} MiB (parameters {mib(params):.2f} MiB, batch "
        f"{mib(x.nbytes):.1f} MiB)")
    out()
    out("| step | time (s) | peak RSS so far (MiB) | step peak over setup (MiB) |")
    out("|---|---|---|---|")
    for step, secs, rss in step_rows:
        out(f"| {step} | {secs:.2f} | {rss:.0f} | {rss - rss_setup:.0f} |")
    out()
    out("Per adder layer call (distinct geometries of resnet20; tracemalloc, workspaces warm):")
    out()
    out("| layers | x | weight | stride | K | P = N·Ho·Wo | fwd temporaries (MiB) "
        "| bwd temporaries (MiB) | cached workspace (MiB) | unfold X_col K·P (MiB) "
        "| unfold Cout·K·P (MiB) | ratio |")
    out("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in layer_rows:
        names = r["layers"] if len(r["layers"]) < 60 else r["layers"].split(", ")[0] + \
            f", … ({r['layers'].count(',') + 1} layers)"
        out(f"| {names} | {r['x']} | {r['w']} | {r['stride']} | {r['K']} | {r['P']} "
            f"| {mib(r['fwd_tmp']):.2f} | {mib(r['bwd_tmp']):.2f} | {mib(r['workspace']):.2f} "
            f"| {mib(r['x_col']):.1f} | {mib(r['unfold']):.0f} "
            f"| {r['unfold'] / max(r['largest'], 1):.0f}× |")
    worst = max(layer_rows, key=lambda r: r["unfold"])
    out()
    out(f"Largest unfold tensor: {mib(worst['unfold']):.0f} MiB ({worst['layers'].split(', ')[0]}); "
        f"addercore's largest per-call temporary or workspace: "
        f"{mib(max(r['largest'] for r in layer_rows)):.2f} MiB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
