#!/usr/bin/env bash
# Out-of-bounds check of the Cython/OpenMP kernels (issue 6, docs/robustness.md).
#
# Copies the working tree (tracked + untracked-but-not-ignored files, so uncommitted kernel
# edits are checked too) into a scratch directory, builds addercore_ext there in place with
# AddressSanitizer (ADDERCORE_SANITIZE=address, setup.py) and, with --boundscheck, Cython's
# boundscheck/wraparound/initializedcheck (ADDERCORE_BOUNDSCHECK=1), then runs the kernel tests
# and the property tests against that build with libasan preloaded.  The in-place build of the
# checkout is never touched.  Any heap/stack out-of-bounds access aborts the run with an ASan
# report (exit status != 0); a Cython bounds violation raises IndexError.
#
# Usage: benchmarks/asan_check.sh [--boundscheck] [--keep] [--ref REV] [extra pytest args...]
#   --ref REV               check the committed tree of git revision REV (e.g. HEAD) instead of
#                           the working tree (useful while kernel edits are in progress); the
#                           current tests/test_properties.py and tests/test_validation.py are
#                           still used
#   ASAN_BUILD_DIR=/tmp/x   scratch directory (default: a fresh mktemp -d)
#   HYPOTHESIS_PROFILE      hypothesis profile for tests/test_properties.py (default "asan":
#                           more examples than the CI profile)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BOUNDSCHECK=0
KEEP=0
REF=""
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --boundscheck) BOUNDSCHECK=1 ;;
    --keep) KEEP=1 ;;
    --ref) REF="$2"; shift ;;
    *) PYTEST_ARGS+=("$1") ;;
  esac
  shift
done

WORK="${ASAN_BUILD_DIR:-$(mktemp -d /tmp/addercore-asan.XXXXXX)}"
mkdir -p "$WORK"
cleanup() { if [ "$KEEP" = 0 ] && [ -z "${ASAN_BUILD_DIR:-}" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

if [ -n "$REF" ]; then
  echo "== exporting $REF of $REPO -> $WORK"
  (cd "$REPO" && git archive "$REF") | (cd "$WORK" && tar -xf -)
  mkdir -p "$WORK/tests"
  cp "$REPO"/tests/test_properties.py "$REPO"/tests/test_validation.py "$WORK/tests/"
else
  echo "== copying the working tree of $REPO -> $WORK"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -f "{}" && echo "{}"' \
    | grep -v -E '\.(so|c)$' \
    | tar -cf - -T -) | (cd "$WORK" && tar -xf -)
fi
rm -f "$WORK"/addercore_ext/*.so "$WORK"/addercore_ext/_adder.c "$WORK"/addercore_ext/_buildinfo.c

LIBASAN="$(gcc -print-file-name=libasan.so)"
echo "== building with ADDERCORE_SANITIZE=address ADDERCORE_BOUNDSCHECK=$BOUNDSCHECK (libasan: $LIBASAN)"
(cd "$WORK" && ADDERCORE_SANITIZE=address ADDERCORE_BOUNDSCHECK=$BOUNDSCHECK \
  python setup.py build_ext --inplace --force > "$WORK/build.log" 2>&1) \
  || { tail -40 "$WORK/build.log"; exit 2; }
n_asan=$(nm -D "$WORK"/addercore_ext/_adder*.so | grep -c __asan_ || true)
[ "$n_asan" -gt 0 ] || { echo "not an ASan build"; exit 2; }

echo "== running kernel + property tests under ASan"
cd "$WORK"
export LD_PRELOAD="$LIBASAN" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export ADDERCORE_BACKEND=cython PYTHONPATH="$WORK"
python -c "import addercore_ext._adder as a, addercore; print('checked build:', a.__file__, 'backend', addercore.backend())" \
  | tee /dev/stderr | grep "$WORK" > /dev/null || { echo "the tests would not import the ASan build"; exit 2; }
# detect_leaks=0: CPython itself "leaks" at exit; we look for out-of-bounds accesses only.
# The test process must import this copy, not the checkout: run from $WORK with -p no:cacheprovider.
HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-asan}" \
python -m pytest -q -p no:cacheprovider \
  tests/test_op_*.py tests/test_properties.py tests/test_validation.py \
  $(cd "$WORK" && ls tests/test_kernels*.py tests/test_fast*.py 2>/dev/null) \
  "${PYTEST_ARGS[@]}"
echo "== ASan: no out-of-bounds access detected"
