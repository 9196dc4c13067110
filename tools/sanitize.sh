#!/usr/bin/env bash
# Builds bnfast with AddressSanitizer + UndefinedBehaviorSanitizer (-DBNFAST_SANITIZE=ON) into its
# own venv and build directory, then runs the tests that reach every kernel and binding under it.
#
#   tools/sanitize.sh                 # the default subset (every kernel family, fuzz, reliability,
#                                     # the edge sweep)
#   tools/sanitize.sh tests/test_x.py # any pytest arguments instead
#
# CPython and NumPy are not instrumented, so the ASan runtime is preloaded (it must come first in
# the library list; -static-libasan is not an option for a shared module loaded by python) and leak detection is off (the interpreter keeps objects alive until exit;
# leaks are checked by tests/test_reliability.py and tools/valgrind_leaks.sh instead). Every UBSan
# finding aborts the run (-fno-sanitize-recover), every ASan finding too.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BNFAST_SANITIZE_VENV:-.venv-sanitize}
CXX=${CXX:-g++}
export CXX
python3 -m venv "$venv"
"$venv/bin/pip" install -q numpy pytest hypothesis pybind11 scikit-build-core ml_dtypes
# Non-editable install from a separate build directory: the normal build stays untouched.
"$venv/bin/pip" install -q --no-build-isolation --force-reinstall --no-deps \
  -C cmake.define.BNFAST_SANITIZE=ON -C cmake.build-type=RelWithDebInfo \
  -C build-dir=build/sanitize .

asan=$("$CXX" -print-file-name=libasan.so)
if [ ! -e "$asan" ]; then
  echo "sanitize.sh: $CXX has no libasan.so ($asan)" >&2
  exit 1
fi

if [ "$#" -eq 0 ]; then
  # Every kernel family and binding (ISAs, dtypes, bad inputs), the fuzz tests, the thread /
  # leak / fork checks, the edge sweep (empty, degenerate, invalid inputs on every ISA) and the
  # bfloat16 kernels' tests; the training, tuning and CLI tests add no kernel code paths.
  set -- tests/test_batch_norm.py tests/test_softmax.py tests/test_vmath.py tests/test_optim.py \
    tests/test_layers.py tests/test_isa.py tests/test_fuzz.py tests/test_reliability.py \
    tests/test_edges.py tests/test_bfloat16.py tests/test_bfloat16_batch_norm.py \
    tests/test_bfloat16_softmax.py tests/test_bfloat16_optim.py -p no:cacheprovider -q -x
fi

# libstdc++ too: CPython does not link it, and ASan's __cxa_throw interceptor must find the real
# one when it starts (else the first C++ exception aborts with a CHECK failure).
stdcxx=$(readlink -f "$("$CXX" -print-file-name=libstdc++.so)")
export LD_PRELOAD="$asan $stdcxx${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export BNFAST_SANITIZED=1  # tests skip what cannot run under ASan (RSS measurements, valgrind)
# The pytest script (not python -m pytest) keeps the source tree off sys.path, so the sanitized
# install is the one imported.
exec "$venv/bin/pytest" "$@"
