"""How a port checks itself against addercore's golden values.

    python examples/port_check.py [GOLDEN_DIR] [--out PORT_DIR] [--op adder2d ...]

A port (CUDA, FPGA, MCU, Rust, TVM ...) does three things, in any language:

1. read ``GOLDEN_DIR/manifest.json``; for every case of an op it implements, open
   ``<file>`` (an ordinary ``.npz``: a zip of ``.npy`` files) and take the arrays named in
   ``inputs`` plus the ``params``;
2. compute the arrays named in ``outputs`` with its own kernels, in the case's ``dtype``;
3. write them, same names, as ``PORT_DIR/<file>`` (a ``.npz``; ``numpy.savez`` or any zip
   writer that stores ``<name>.npy`` entries), then run

       python -m addercore golden verify GOLDEN_DIR --candidate PORT_DIR [--op ...] [--strict]

   which prints a per-case table and exits 0 only if every selected case passed.

The "port" below is deliberately naive: scalar loops, one accumulator per output in the
case's dtype, taps summed c, i, j ascending (the canonical order, so its ℓ1 forward is
bit-exact and ``--strict`` passes). It implements ``adder2d``, ``conv2d`` and
``batch_norm2d``; the whole-network cases (``resnet_cifar``) are left out, so it selects the
ops it has. Nothing here calls addercore's kernels.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from addercore.ops.geometry import Conv2dGeometry

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bootstrap  # noqa: E402  (the compiled addercore: installed, or the checkout's build)

DEFAULT_GOLDEN = os.path.join(HERE, os.pardir, "tests", "golden")


# --------------------------------------------------------------------------------------------
# The "port": naive kernels written from docs/method.md (§2 forward, §4 gradients)
# --------------------------------------------------------------------------------------------
def _geometry(x, w, stride, padding, dilation=(1, 1), groups=1):
    # The shapes and output size (docs/golden-format.md §2) from addercore's one geometry
    # object: bookkeeping shared with the port, not a kernel; every value below is computed
    # by the naive loops of this file. cin is the group's Cin/groups (the weight's axis 1).
    g = Conv2dGeometry.from_shapes(x.shape, w.shape, stride, padding, dilation, groups)
    (sh, sw), (ph, pw) = g.stride, g.padding
    return g.n, g.cin_group, g.h, g.w, g.cout, g.kh, g.kw, sh, sw, ph, pw, g.ho, g.wo


def _window(p):
    """(dilation, groups) of a case's params (absent: (1, 1) and 1)."""
    return tuple(p.get("dilation", (1, 1))), p.get("groups", 1)


def _pixel(x, n, c, r, s, ph, pw):
    """Xp[n, c, r, s]: zero outside the image (padding)."""
    r, s = r - ph, s - pw
    if 0 <= r < x.shape[2] and 0 <= s < x.shape[3]:
        return x[n, c, r, s]
    return x.dtype.type(0)


def adder2d(x, w, g, stride, padding, norm, filter_grad, input_grad, eta, dilation=(1, 1),
            groups=1):
    n, cin, h, wd, cout, kh, kw, sh, sw, ph, pw, ho, wo = _geometry(x, w, stride, padding,
                                                                    dilation, groups)
    (dh, dw), og = dilation, cout // groups
    dt = x.dtype.type
    y = np.zeros((n, cout, ho, wo), dtype=x.dtype)
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    for b in range(n):
        for t in range(cout):
            for oh in range(ho):
                for ow in range(wo):
                    acc = dt(0)
                    go = g[b, t, oh, ow]
                    for c in range(cin):  # canonical order: c, then i, then j
                        for i in range(kh):
                            for j in range(kw):
                                r, s = oh * sh + i * dh, ow * sw + j * dw
                                xc = t // og * cin + c  # input channel: the group's c-th
                                d = _pixel(x, b, xc, r, s, ph, pw) - w[t, c, i, j]  # X - F
                                acc = acc + (abs(d) if norm == "l1" else d * d)
                                # filter gradient
                                if filter_grad == "sign":
                                    fg = dt(np.sign(d))
                                elif norm == "l2":
                                    fg = dt(2) * d
                                else:
                                    fg = d
                                gw[t, c, i, j] += fg * go
                                # input gradient (taps on the padding are dropped)
                                if input_grad == "hardtanh":
                                    ig = min(max(-d, dt(-1)), dt(1))
                                elif norm == "l2" and input_grad == "exact":
                                    ig = dt(-2) * d
                                else:  # sign, and exact for l1
                                    ig = -dt(np.sign(d))
                                if ph <= r < ph + h and pw <= s < pw + wd:
                                    gx[b, xc, r - ph, s - pw] += ig * go
                    y[b, t, oh, ow] = -acc
    norm2 = np.sqrt(np.sum(gw.astype(np.float64) ** 2))
    factor = eta * np.sqrt(gw.size) / max(norm2, 1e-12)
    return {"output": y, "grad_input": gx, "grad_weight": gw,
            "grad_weight_adaptive": (gw * x.dtype.type(factor)).astype(x.dtype)}


def conv2d(x, w, g, bias, stride, padding, dilation=(1, 1), groups=1):
    n, cin, h, wd, cout, kh, kw, sh, sw, ph, pw, ho, wo = _geometry(x, w, stride, padding,
                                                                    dilation, groups)
    (dh, dw), og = dilation, cout // groups
    y = np.zeros((n, cout, ho, wo), dtype=x.dtype)
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for b in range(n):
        for t in range(cout):
            for oh in range(ho):
                for ow in range(wo):
                    acc = x.dtype.type(0) if bias is None else bias[t]
                    go = g[b, t, oh, ow]
                    for c in range(cin):
                        for i in range(kh):
                            for j in range(kw):
                                r, s = oh * sh + i * dh, ow * sw + j * dw
                                xc = t // og * cin + c  # input channel: the group's c-th
                                acc = acc + _pixel(x, b, xc, r, s, ph, pw) * w[t, c, i, j]
                                gw[t, c, i, j] += _pixel(x, b, xc, r, s, ph, pw) * go
                                if ph <= r < ph + h and pw <= s < pw + wd:
                                    gx[b, xc, r - ph, s - pw] += w[t, c, i, j] * go
                    y[b, t, oh, ow] = acc
    out = {"output": y, "grad_input": gx, "grad_weight": gw}
    if bias is not None:
        out["grad_bias"] = g.sum(axis=(0, 2, 3))
    return out


def batch_norm2d(x, weight, bias, running_mean, running_var, g, training, momentum, eps):
    dt = x.dtype
    m = x.shape[0] * x.shape[2] * x.shape[3]
    ax = (0, 2, 3)
    if training:
        mean = x.astype(np.float64).mean(axis=ax)
        var = ((x - mean[None, :, None, None]) ** 2).mean(axis=ax)  # biased, two-pass
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
    y = xhat * weight[None, :, None, None] + bias[None, :, None, None]
    gb = g.sum(axis=ax)
    gw = (g * xhat).sum(axis=ax)
    if training:
        gx = (weight * invstd)[None, :, None, None] * (
            g - gb[None, :, None, None] / m - xhat * gw[None, :, None, None] / m)
    else:
        gx = (weight * invstd)[None, :, None, None] * g
    out = {"output": y.astype(dt), "grad_input": gx.astype(dt), "grad_weight": gw.astype(dt),
           "grad_bias": gb.astype(dt)}
    if training:  # running_var takes the unbiased variance
        out["running_mean_updated"] = ((1 - momentum) * running_mean + momentum * mean).astype(dt)
        out["running_var_updated"] = ((1 - momentum) * running_var
                                      + momentum * var * m / (m - 1)).astype(dt)
    return out


PORT = {
    "adder2d": lambda a, p: adder2d(a["x"], a["weight"], a["grad_output"], p["stride"],
                                    p["padding"], p["norm"], p["filter_grad"], p["input_grad"],
                                    p["eta"], *_window(p)),
    "conv2d": lambda a, p: conv2d(a["x"], a["weight"], a["grad_output"], a.get("bias"),
                                  p["stride"], p["padding"], *_window(p)),
    "batch_norm2d": lambda a, p: batch_norm2d(a["x"], a["weight"], a["bias"], a["running_mean"],
                                              a["running_var"], a["grad_output"], p["training"],
                                              p["momentum"], p["eps"]),
}


# --------------------------------------------------------------------------------------------
# Dump the port's outputs in the golden layout, then let addercore compare
# --------------------------------------------------------------------------------------------
def dump(golden_dir, port_dir, ops, select=None):
    """Run the port on every selected case and write ``port_dir/<file>``; returns the count."""
    with open(os.path.join(golden_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    os.makedirs(port_dir, exist_ok=True)
    count = 0
    for case in manifest["cases"]:
        if case["op"] not in ops or (select and case["name"] not in select):
            continue
        with np.load(os.path.join(golden_dir, case["file"]), allow_pickle=False) as z:
            inputs = {name: z[name] for name in case["inputs"]}  # never read the outputs
        outputs = PORT[case["op"]](inputs, case["params"])
        missing = set(case["outputs"]) - set(outputs)
        assert not missing, f"{case['name']}: the port did not produce {sorted(missing)}"
        np.savez(os.path.join(port_dir, case["file"]), **outputs)
        count += 1
        print(f"port: {case['name']}", flush=True)
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description="Dump a naive port's outputs in the golden "
                                                 "layout and run `addercore golden verify "
                                                 "--candidate` on them.")
    parser.add_argument("golden_dir", nargs="?", default=DEFAULT_GOLDEN)
    parser.add_argument("--out", help="where the port writes its .npz files (default: a "
                                      "temporary directory)")
    parser.add_argument("--op", action="append", choices=sorted(PORT),
                        help="ops to run (default: all the port implements)")
    parser.add_argument("--select", action="append", help="only these case names")
    args = parser.parse_args(argv)
    ops = args.op or sorted(PORT)
    with tempfile.TemporaryDirectory() as tmp:
        port_dir = args.out or tmp
        if not dump(args.golden_dir, port_dir, ops, args.select):
            print("no case selected", file=sys.stderr)
            return 2
        cmd = _bootstrap.addercore_command() + ["golden", "verify", args.golden_dir,
               "--candidate", port_dir, "--strict", "--quiet"]
        for op in ops:
            cmd += ["--op", op]
        for name in args.select or ():
            cmd += ["--select", name]
        print("$", " ".join(cmd), flush=True)
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
