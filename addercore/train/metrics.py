"""Per-epoch metrics files (``metrics.jsonl``, ``metrics.csv``) and the ``curves.png`` plot."""
import csv
import json

from .. import io as aio

__all__ = ["METRIC_FIELDS", "rewrite_metrics", "append_metrics", "plot_curves",
           "NO_PLOT_MESSAGE"]

NO_PLOT_MESSAGE = ("no curves.png written: matplotlib is not installed (pip install matplotlib, "
                   "or install addercore with the [plot] extra)")

METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "steps",
                 "skipped_steps", "train_time_s", "train_images_per_s", "eval_time_s",
                 "eval_images_per_s", "elapsed_s",
                 # with precise_bn: test loss/accuracy with re-estimated BatchNorm statistics
                 "precise_bn_test_loss", "precise_bn_test_acc")


def rewrite_metrics(out, history):
    """Write both metrics files of ``out`` from ``history`` (list of row dicts), atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with aio.atomic_open(out / "metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    with aio.atomic_open(out / "metrics.csv", "w") as f:
        w = csv.DictWriter(f, METRIC_FIELDS)
        w.writeheader()
        w.writerows(history)


def append_metrics(out, row):
    """Append one epoch's ``row`` to both metrics files of ``out`` (CSV header when new)."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    csv_path = out / "metrics.csv"
    new = not csv_path.exists() or csv_path.stat().st_size == 0
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, METRIC_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def plot_curves(path, history, title):
    """Write loss and accuracy curves of ``history`` to ``path`` (markers at every epoch,
    integer epoch ticks); returns the path, or None when there is no history. ImportError
    when matplotlib is not importable (:data:`NO_PLOT_MESSAGE` says what to do)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not history:
        return None
    from matplotlib.ticker import MaxNLocator

    ep = [r["epoch"] for r in history]
    precise = [r for r in history if r.get("precise_bn_test_acc") is not None]
    style = dict(marker="o", markersize=4)  # a one-epoch run is a single visible point
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], label="train", **style)
    a1.plot(ep, [r["test_loss"] for r in history], label="test", **style)
    a2.plot(ep, [100 * r["train_acc"] for r in history], label="train", **style)
    a2.plot(ep, [100 * r["test_acc"] for r in history], label="test", **style)
    if precise:
        pe = [r["epoch"] for r in precise]
        a1.plot(pe, [r["precise_bn_test_loss"] for r in precise], label="test, precise BN",
                **style)
        a2.plot(pe, [100 * r["precise_bn_test_acc"] for r in precise],
                label="test, precise BN", **style)
    a1.set_ylabel("cross-entropy")
    a2.set_ylabel("top-1 accuracy (%)")
    for a in (a1, a2):
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    try:
        aio.save_figure_png(fig, path, dpi=100)  # atomic: an interrupted run keeps its last plot
    finally:
        plt.close(fig)
    return path
