#!/usr/bin/env bash
# Check and time the opt-in AVX-512F kernels (ADDERCORE_AVX512=1) on a CPU that has AVX-512F,
# against an AVX2 build of the same tree in the same run.  Builds both in place (the AVX2 one in
# a copy under $TMPDIR), runs the kernel tests on the AVX-512 build, then the benchmarks.
# Results go to $OUT (default ./avx512-results).  About 4 minutes on 16 cores.
#
#     bash benchmarks/avx512_check.sh
set -u -o pipefail
OUT=${OUT:-avx512-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
ROOT=$PWD
AVX2=${TMPDIR:-/tmp}/addercore-avx2
rm -rf "$AVX2" && mkdir -p "$AVX2"
cp -r setup.py pyproject.toml addercore addercore_ext benchmarks tests "$AVX2"/
rm -f "$AVX2"/addercore_ext/*.so "$AVX2"/addercore_ext/*.c
(cd "$AVX2" && $PY setup.py build_ext --inplace --force > "$OUT/build-avx2.log" 2>&1) &
ADDERCORE_AVX512=1 $PY setup.py build_ext --inplace --force > "$OUT/build-avx512.log" 2>&1
wait
for d in "$ROOT" "$AVX2"; do
  (cd "$d" && PYTHONPATH=$d $PY -c "from addercore.ops import fast; print('$d', fast.simd())")
done | tee "$OUT/simd.txt"
PYTHONPATH=$ROOT $PY -m pytest -q -p no:cacheprovider -m "not slow" tests/test_kernels.py \
  tests/test_golden.py tests/test_properties.py tests/test_batchnorm_kernels.py tests/test_fused_norm.py \
  tests/test_op_*.py tests/test_threads.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
for d in "$ROOT" "$AVX2"; do
  echo "== $d" | tee -a "$OUT/layers.txt" "$OUT/resnet20.txt"
  (cd "$d" && PYTHONPATH=$d $PY benchmarks/bench_layers.py --batch 256 --threads 1 2 --repeat 3 \
    --no-torch 2>&1 | tee -a "$OUT/layers.txt")
  (cd "$d" && PYTHONPATH=$d $PY benchmarks/bench_resnet20.py --batch 64 256 --threads 1 2 \
    --steps 2 2>&1 | tee -a "$OUT/resnet20.txt")
done
