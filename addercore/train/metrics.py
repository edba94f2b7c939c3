"""Per-epoch metrics files (``metrics.jsonl``, ``metrics.csv``) and the ``curves.png`` plot."""
import csv
import json

from .. import io as aio

__all__ = ["METRIC_FIELDS", "rewrite_metrics", "append_metrics", "plot_curves"]

METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "steps",
                 "skipped_steps", "train_time_s", "train_images_per_s", "eval_time_s",
                 "eval_images_per_s", "elapsed_s")


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
    """Write loss and accuracy curves of ``history`` to ``path`` when matplotlib is importable;
    returns the path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not history:
        return None
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], label="train")
    a1.plot(ep, [r["test_loss"] for r in history], label="test")
    a1.set_xlabel("epoch"), a1.set_ylabel("cross-entropy"), a1.legend()
    a2.plot(ep, [100 * r["train_acc"] for r in history], label="train")
    a2.plot(ep, [100 * r["test_acc"] for r in history], label="test")
    a2.set_xlabel("epoch"), a2.set_ylabel("top-1 accuracy (%)"), a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
