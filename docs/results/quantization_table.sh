#!/bin/sh
# Accuracy of the integer ResNet-20 (docs/results/quantization.md): one row per command, run
# from the repository root; each appends "<command> => <final line>" to $LOG.
# Calibration: 512 CIFAR-10 training images (seed 0); evaluation: all 10,000 test images.
#   sh docs/results/quantization_table.sh [all|float|shared|grouped]
LOG=${LOG:-docs/results/quantization.log}
CKPT=${CKPT:-../shared/data/pretrained/ResNet20-AdderNet.pth}
DATA=${DATA:-../shared/data/cifar-10-batches-py}
PART=${1:-all}
run() {
    out=$(PYTHONPATH=. nice -n 10 python examples/eval_pretrained.py "$CKPT" --data-dir "$DATA" "$@" 2>/dev/null | tail -1)
    echo "examples/eval_pretrained.py CKPT --data-dir DATA $* => $out" >> "$LOG"
}
if [ "$PART" = all ] || [ "$PART" = float ]; then
    run --threads 2
fi
if [ "$PART" = all ] || [ "$PART" = shared ]; then
    for clip in mse max 99.99; do
        for bits in 8 6 5 4; do
            run --bits $bits --act-percentile $clip
        done
    done
fi
if [ "$PART" = all ] || [ "$PART" = grouped ]; then
    # On the released checkpoint every group's limit is 2^bits - 1 (each filter has taps at the
    # clamp), so the grouped model is arithmetically the shared one.
    for clip in mse max; do
        for bits in 8 6 5 4; do
            run --bits $bits --scheme grouped --groups 4 --act-percentile $clip
        done
    done
fi
