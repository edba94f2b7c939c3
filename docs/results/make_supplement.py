#!/usr/bin/env python
"""Table 1 of the supplement on CIFAR-10 ResNet-20 (10-epoch runs), and the four runs'
test-accuracy curves.

    python docs/results/make_supplement.py [--results-dir DIR] [--figure PNG] [--no-figure]

Reads ``metrics.jsonl`` of the four runs under ``--results-dir`` (default: this folder):
``resnet20_cnn_cifar10`` (CNN), ``resnet20_adder_l2_cifar10`` (ℓ2-AdderNet),
``resnet20_adder_cifar10`` (ℓ1-AdderNet) and ``resnet20_adder_sign_cifar10`` (ℓ1-AdderNet
trained with the sign filter gradient). Prints a markdown table (one row per run): #Mul and
#Add of the network body (the layers AdderNet replaces; first convolution and classifier
excluded) from :func:`addercore.profile.count_ops` for one 32×32 image (ResNet-20) and one
224×224 image (ImageNet ResNet-18, the supplement's 1.8G/3.6G figures; in brackets all
layers, first convolution and classifier included), epochs done, final
test accuracy, best test accuracy (epoch), final train accuracy, and a column "after BN
re-estimation" only when some run folder holds ``bn_reestimated.json`` (``{"test_acc": fraction,
...}``). A run still in progress (fewer epochs in ``metrics.jsonl`` than the ``--epochs`` of its
``command.sh``, default 10) is reported with the epochs done so far and marked as such.

Writes ``--figure`` (default ``table1_curves.png`` next to this script; replaced on every run, it
is this script's output) with the test accuracy per epoch of every run (train accuracy
dotted), unfinished runs drawn as far as they got (dashed, last point marked). Needs matplotlib for the figure only.
"""
import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a source checkout

from addercore.models import resnet18, resnet20  # noqa: E402
from addercore.profile import count_ops  # noqa: E402

# label, folder, kind, norm, what the supplement reports for ImageNet ResNet-18 (method §10.2)
RUNS = [
    ("CNN", "resnet20_cnn_cifar10", "cnn", "l1", "1.8G / 1.8G; 69.8% / 89.1%"),
    ("ℓ2-AdderNet", "resnet20_adder_l2_cifar10", "adder", "l2", "1.8G / 3.6G; 69.6% / 89.0%"),
    ("ℓ1-AdderNet", "resnet20_adder_cifar10", "adder", "l1", "0 / 3.6G; 66.8% / 87.4%"),
    ("ℓ1-AdderNet, sign filter gradient", "resnet20_adder_sign_cifar10", "adder", "l1",
     "– (not in method §10.2)"),
]


def read_metrics(run_dir):
    """Rows of ``metrics.jsonl`` (list of dicts, by epoch); [] when absent. A last line that is
    not complete JSON (a run writing it right now) is ignored."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    lines = p.read_text().splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break
            raise ValueError(f"{p}: line {k + 1} is not JSON") from None
    return sorted(rows, key=lambda r: r["epoch"])


def planned_epochs(run_dir, default=10):
    """The ``--epochs`` of the run's ``command.sh`` (first occurrence), else ``default``."""
    p = Path(run_dir) / "command.sh"
    if p.exists():
        m = re.search(r"--epochs[ =](\d+)", p.read_text())
        if m:
            return int(m.group(1))
    return default


def body_ops(kind, norm):
    """(#Mul, #Add) of the body of ResNet-20 on 1×3×32×32 and of ResNet-18 on 1×3×224×224,
    and (#Mul, #Add) of all of ResNet-18 (body + first convolution + classifier)."""
    r20 = count_ops(resnet20(10, kind=kind, norm=norm), (1, 3, 32, 32))
    r18 = count_ops(resnet18(1000, kind=kind, norm=norm), (1, 3, 224, 224))
    return (r20.body_mul, r20.body_add), (r18.body_mul, r18.body_add), (r18.mul, r18.add)


def _num(n):
    if n == 0:
        return "0"
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


def collect(results_dir):
    """One dict per run: label, dir, rows, planned, done, finished, ops, supplement, bn."""
    out = []
    for label, folder, kind, norm, supp in RUNS:
        d = Path(results_dir) / folder
        rows = read_metrics(d)
        planned = planned_epochs(d)
        bn = None
        bp = d / "bn_reestimated.json"
        if bp.exists():
            bn = json.loads(bp.read_text())
        out.append({"label": label, "dir": d, "rows": rows, "planned": planned,
                    "done": len(rows), "finished": len(rows) >= planned,
                    "ops": body_ops(kind, norm), "supplement": supp, "bn": bn})
    return out


def table(runs):
    with_bn = any(r["bn"] is not None for r in runs)
    head = ["network (ResNet-20, CIFAR-10)", "epochs done",
            "#Mul / #Add body, R-20 32×32",
            "#Mul / #Add body, R-18 224×224 (all layers)",
            "supplement R-18 ImageNet: #Mul / #Add; top-1 / top-5",
            "final test acc", "best test acc (epoch)", "final train acc"]
    if with_bn:
        head.append("test acc after BN re-estimation")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        (m20, a20), (m18, a18), (t18m, t18a) = r["ops"]
        rows = r["rows"]
        if rows:
            last = rows[-1]
            best = max(rows, key=lambda q: q["test_acc"])
            acc = [f"{100 * last['test_acc']:.2f}%",
                   f"{100 * best['test_acc']:.2f}% ({best['epoch']})",
                   f"{100 * last['train_acc']:.2f}%"]
        else:
            acc = ["–", "–", "–"]
        if r["finished"]:
            done = f"{r['done']}/{r['planned']}"
        else:
            done = f"**{r['done']}/{r['planned']}, run in progress**"
        cells = [r["label"], done, f"{_num(m20)} / {_num(a20)}",
                 f"{_num(m18)} / {_num(a18)} ({_num(t18m)} / {_num(t18a)})",
                 r["supplement"]] + acc
        if with_bn:
            cells.append(f"{100 * r['bn']['test_acc']:.2f}%" if r["bn"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(runs, path):
    """Write the test-accuracy curves to ``path``; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from addercore.io import save_figure_png
    fig, ax = plt.subplots(figsize=(7, 5.2))
    colours = ["tab:blue", "tab:green", "tab:orange", "tab:red"]
    planned = max(r["planned"] for r in runs)
    for c, r in zip(colours, runs):
        ep = [q["epoch"] for q in r["rows"]]
        acc = [100 * q["test_acc"] for q in r["rows"]]
        # train accuracy (thin, dotted): the ℓ1 AdderNet's early test accuracy lags it because
        # its BatchNorm running statistics trail the fast-moving adder outputs (README.md)
        ax.plot(ep, [100 * q["train_acc"] for q in r["rows"]], ":", color=c, lw=1)
        if r["finished"]:
            label = f"{r['label']} ({acc[-1]:.2f}%)"
            ax.plot(ep, acc, "-o", color=c, ms=3, label=label)
        elif ep:
            label = f"{r['label']} (running: {r['done']}/{r['planned']} epochs, {acc[-1]:.2f}%)"
            ax.plot(ep, acc, "--o", color=c, ms=3, label=label)
            ax.plot(ep[-1:], acc[-1:], "o", color=c, ms=8, mfc="none")
        else:
            ax.plot([], [], "--", color=c,
                    label=f"{r['label']} (running: no epoch finished yet)")
    ax.set_xlim(0.5, planned + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%): test (10,000 images), train dotted")
    ax.set_title(f"ResNet-20 on CIFAR-10, {planned}-epoch cosine recipe, seed 0 "
                 "(dotted: train accuracy)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    try:
        save_figure_png(fig, path, dpi=120)
    finally:
        plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-dir", default=str(HERE), help="folder holding the four run folders")
    p.add_argument("--figure", default=str(HERE / "table1_curves.png"))
    p.add_argument("--no-figure", action="store_true")
    a = p.parse_args(argv)
    if not Path(a.results_dir).is_dir():
        p.error(f"--results-dir {a.results_dir} is not a directory")
    runs = collect(a.results_dir)
    print(table(runs))
    if not a.no_figure:
        if figure(runs, a.figure):
            print(f"\nwrote {a.figure}")
        else:
            print("\nmatplotlib is not importable: no figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
