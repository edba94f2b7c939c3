#!/usr/bin/env python
"""Print the per-epoch table (markdown) of the evidence runs: adder vs CNN side by side.

    python docs/results/make_table.py [DIR_ADDER] [DIR_CNN]
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows(d):
    p = Path(d) / "metrics.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []


def main(argv):
    a_dir = argv[1] if len(argv) > 1 else HERE / "resnet20_adder_cifar10"
    c_dir = argv[2] if len(argv) > 2 else HERE / "resnet20_cnn_cifar10"
    a, c = {r["epoch"]: r for r in rows(a_dir)}, {r["epoch"]: r for r in rows(c_dir)}
    print("| epoch | lr | adder train acc | adder test acc | adder img/s | CNN train acc "
          "| CNN test acc | CNN img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for e in sorted(set(a) | set(c)):
        def cells(r):
            if r is None:
                return ["…", "…", "…"]
            return [f"{100 * r['train_acc']:.2f}%", f"{100 * r['test_acc']:.2f}%",
                    f"{r['train_images_per_s']:.1f}"]
        lr = (a.get(e) or c.get(e))["lr"]
        print(f"| {e} | {lr:.4f} | " + " | ".join(cells(a.get(e)) + cells(c.get(e))) + " |")


if __name__ == "__main__":
    main(sys.argv)
