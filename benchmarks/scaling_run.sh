#!/usr/bin/env bash
# Thread-scaling run on a quiet many-core machine (issue 3's "1 -> 2 threads" check cannot be
# made on the 2-core development VM, whose second core is never fully free).  Builds the
# extension in place, then runs the layer and ResNet-20 benchmarks for 1, 2, 4, 8 and 16
# threads, and the PyTorch reference points when torch is importable.  Results go to $OUT
# (default ./scaling-results).  About 6 minutes on 16 cores.
#
#     bash benchmarks/scaling_run.sh
set -u -o pipefail
OUT=${OUT:-scaling-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
{
  date -u
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|L1d|L2|L3|Flags" | cut -c1-400
  nproc
  $PY -c "import numpy, sys; print(sys.version.split()[0], 'numpy', numpy.__version__)"
} > "$OUT/machine.txt" 2>&1
$PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the benchmarks import this in-place build
$PY -c "import addercore; from addercore.ops import fast; print(addercore.backend(), fast.simd())" \
  | tee -a "$OUT/machine.txt"
$PY benchmarks/bench_layers.py --batch 256 --threads 1 2 4 8 16 --repeat 3 --no-torch \
  2>&1 | tee "$OUT/layers.txt"
$PY benchmarks/bench_resnet20.py --batch 64 256 --threads 1 2 --steps 2 \
  2>&1 | tee "$OUT/resnet20.txt"
$PY benchmarks/bench_resnet20.py --batch 256 --threads 4 8 16 --steps 2 \
  2>&1 | tee -a "$OUT/resnet20.txt"
$PY benchmarks/bench_torch_resnet20.py --kind cnn --batch 64 256 --threads 1 2 16 --steps 2 \
  2>&1 | tee "$OUT/torch.txt"
$PY benchmarks/bench_torch_resnet20.py --kind unfold --batch 32 --threads 2 16 --steps 1 \
  2>&1 | tee -a "$OUT/torch.txt"
