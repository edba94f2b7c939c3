#!/bin/sh
# Accuracy of the integer ResNet-20 (docs/results/quantization.md): one row per command, run
# from the repository root; each appends "<command> => <final line>" to $LOG.
# Calibration: 512 training images (seed 0); evaluation: all 10,000 test images.
LOG=${LOG:-docs/results/quantization.log}
CKPT=${CKPT:-../shared/data/pretrained/ResNet20-AdderNet.pth}
DATA=${DATA:-../shared/data/cifar-10-batches-py}
run() {
    out=$(PYTHONPATH=. nice -n 10 python examples/eval_pretrained.py "$CKPT" --data-dir "$DATA" "$@" 2>/dev/null | tail -1)
    echo "examples/eval_pretrained.py CKPT --data-dir DATA $* => $out" >> "$LOG"
}
run --bits 8 --act-percentile 99.999
run --bits 6 --act-percentile 99.99
run --bits 4 --act-percentile 99.9
run --bits 5 --act-percentile 99.99
run --bits 8
run --bits 6
run --bits 4
run --bits 5
run --bits 8 --scheme grouped --groups 4 --act-percentile 99.999
run --bits 6 --scheme grouped --groups 4 --act-percentile 99.99
run --bits 4 --scheme grouped --groups 4 --act-percentile 99.9
run --bits 5 --scheme grouped --groups 4 --act-percentile 99.99
run --bits 8 --scheme grouped --groups 4
run --bits 6 --scheme grouped --groups 4
run --bits 4 --scheme grouped --groups 4
run --bits 5 --scheme grouped --groups 4
