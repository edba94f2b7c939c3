#!/usr/bin/env python
"""Supplement, Propositions 1-2: minimise |x − f| with the sign gradient and with the
full-precision gradient, in n = 1, 10, 1,000 and 100,000 dimensions.

    python examples/propositions.py [--lr 0.3] [--steps 100] [--dims 1 10 1000 100000]
                                    [--seed 0] [--out-dir .] [--force]

The loss is the ℓ1 adder output of one patch, ``L(f) = Σ_{k<n} |x_k − f_k| = −y`` with
``y = adder2d(x, f)``, x of shape (1, n, 1, 1) drawn from N(0, 1), f starting at 0. Both filter
gradients come from the library's own backward (:func:`addercore.ops.adder2d_backward` with
``∂L/∂y = −1``):

- ``sign`` (the true gradient, supplement Eq. 2): ``∂L/∂f = −sgn(x − f)``;
- ``full`` (the full-precision gradient AdderNet uses, Eq. 3): ``∂L/∂f = −(x − f)``;

and plain gradient descent ``f ← f − lr·∂L/∂f`` at a fixed learning rate (float64).
Full precision shrinks every coordinate's distance by exactly ``(1 − lr)`` per step, so it
converges for ``0 < lr < 1`` (Proposition 2); the sign step has length ``lr`` whatever the
distance, so once f is within ``lr`` of x each coordinate jumps back and forth around x and
never settles (Proposition 1) — the mean distance stays near ``lr/2`` for every n.

Writes ``propositions.csv`` (columns gradient, n, iteration, distance = Σ|x − f|,
mean_distance = distance / n; iteration 0 is the start) always, and ``propositions.png``
(mean distance per dimension over iterations, log scale) when matplotlib is importable;
otherwise it says so. Existing output files are only replaced with ``--force``.
Prints the final distances. Runs in about a second.
"""
import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from addercore import ops  # noqa: E402
from addercore.io import atomic_open, save_figure_png  # noqa: E402

GRADIENTS = ("sign", "full")


def minimise(n, filter_grad, lr, steps, seed=0):
    """Gradient descent on ``Σ|x − f|`` in ``n`` dimensions; returns the distance
    ``Σ|x − f|`` before the first and after every step, float64 array of shape (steps + 1,).

    x ~ N(0, 1) from ``np.random.default_rng(seed)`` (the same x for both gradients), f = 0.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, n, 1, 1))
    f = np.zeros((1, n, 1, 1))
    grad_y = -np.ones((1, 1, 1, 1))  # L = Σ|x − f| = −y
    dist = np.empty(steps + 1)
    dist[0] = np.abs(x - f).sum()
    for t in range(1, steps + 1):
        _, grad_f = ops.adder2d_backward(x, f, grad_y, filter_grad=filter_grad)
        f = f - lr * grad_f
        dist[t] = np.abs(x - f).sum()
    return dist


def run(dims, lr, steps, seed=0):
    """``{(gradient, n): distances}`` for every n in ``dims`` and both gradients."""
    return {(g, n): minimise(n, g, lr, steps, seed) for n in dims for g in GRADIENTS}


def to_csv(results):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["gradient", "n", "iteration", "distance", "mean_distance"])
    for (g, n), d in results.items():
        for t, v in enumerate(d):
            w.writerow([g, n, t, repr(float(v)), repr(float(v / n))])
    return buf.getvalue()


def plot(results, lr, path):
    """Save the figure to ``path``; return False (and write nothing) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    dims = sorted({n for _, n in results})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(dims)))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c, n in zip(colours, dims):
        for g, style in (("sign", "-"), ("full", "--")):
            d = results[(g, n)] / n
            t = np.arange(len(d))
            keep = d > 0  # an exact 0 has no place on a log axis
            ax.semilogy(t[keep], d[keep], style, color=c, lw=1.4,
                        label=f"{g}, n = {n:,}")
    ax.axhline(lr / 2, color="grey", lw=0.8, ls=":")
    ax.text(t[-1], lr / 2 * 1.6, "lr / 2", color="grey", fontsize=8, ha="right")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean distance per dimension  Σ|x − f| / n")
    ax.set_title(f"minimise Σ|x − f|: sign gradient (solid) vs full-precision (dashed), lr = {lr}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    try:
        save_figure_png(fig, path, dpi=120)
    finally:
        plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lr", type=float, default=0.3,
                   help="fixed learning rate, 0 < lr < 1 (default 0.3)")
    p.add_argument("--steps", type=int, default=100, help="iterations (default 100)")
    p.add_argument("--dims", type=int, nargs="+", default=[1, 10, 1000, 100000],
                   help="dimensions n (default 1 10 1000 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=".", help="where propositions.csv/.png go (default .)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    a = p.parse_args(argv)
    if not 0 < a.lr < 1:
        p.error(f"--lr must be in (0, 1) (Proposition 2 needs lr < 1), got {a.lr}")
    if a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    if any(n < 1 for n in a.dims):
        p.error(f"--dims must be positive, got {a.dims}")
    out = Path(a.out_dir)
    if not out.is_dir():
        p.error(f"--out-dir {out} is not a directory")
    csv_path, png_path = out / "propositions.csv", out / "propositions.png"
    existing = [str(q) for q in (csv_path, png_path) if q.exists()]
    if existing and not a.force:
        p.error(f"{', '.join(existing)} exist(s); pass --force to replace")

    results = run(a.dims, a.lr, a.steps, a.seed)
    with atomic_open(csv_path, "w") as f:
        f.write(to_csv(results))
    print(f"lr = {a.lr}, {a.steps} steps; mean distance per dimension Σ|x − f|/n:")
    print(f"{'n':>8s} {'start':>9s} {'full, final':>12s} {'(1-lr)^T·start':>15s} "
          f"{'sign, final':>12s} {'sign, min of last 10':>21s}")
    for n in a.dims:
        s, fu = results[("sign", n)] / n, results[("full", n)] / n
        print(f"{n:8d} {s[0]:9.4f} {fu[-1]:12.3e} {s[0] * (1 - a.lr) ** a.steps:15.3e} "
              f"{s[-1]:12.4f} {s[-10:].min():21.4f}")
    print(f"wrote {csv_path}")
    if plot(results, a.lr, png_path):
        print(f"wrote {png_path}")
    else:
        print("matplotlib is not importable: no propositions.png (the CSV has the same data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
