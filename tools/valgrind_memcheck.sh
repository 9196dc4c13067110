#!/usr/bin/env bash
# valgrind memcheck over the edge-case sweep (tests/test_edges.py: empty, degenerate and invalid
# inputs, and the bfloat16 kernels' edge tests, on every ISA valgrind can run: scalar and AVX2). ASan (tools/sanitize.sh) misses
# what an uninstrumented numpy or CPython does with our buffers, and stays silent on reads of
# uninitialised memory; memcheck sees both, on the normal Release build. Fails if an invalid
# read/write, an invalid or mismatched free, a use of uninitialised memory (a conditional, an
# address, a syscall argument) or an overlapping copy has a stack (its own, the block's or the
# origin's) through bnfast's extension (a bnfast/_core or bnfast:: frame), or if pytest fails.
# Other reports are counted, not failed on; tools/valgrind.supp holds the known ones (ld.so,
# CPython, glibc), each with its reason. Leaks are tools/valgrind_leaks.sh's job.
#
#   tools/valgrind_memcheck.sh                      # the sweep and the bfloat16 edge tests
#   tools/valgrind_memcheck.sh tests/test_x.py -k y # any pytest arguments instead
#   tools/valgrind_memcheck.sh --script file.py     # any python file (args after it are its own)
#   BNFAST_VALGRIND_EXAMPLES=N  hypothesis examples per @given test (default 5)
#   BNFAST_VALGRIND_JOBS=N      pytest processes, each a share of the tests (default: nproc)
#   BNFAST_VALGRIND_PYTHON=...  a venv's python with bnfast installed (default .venv/bin/python)
#   BNFAST_ISA=scalar|avx2      (with --script) the ISA to run; valgrind has no AVX-512
#
# It caught the zero-width-row write in batch norm (eval, x of shape (3, 0), (2, 3, 0) or (0,)
# with axis=0): "Invalid write of size 8 at bnfast::{scalar,avx2}::normalize<float>" plus invalid
# 16/32-byte reads, on both ISAs (--script with BNFAST_ISA); under avx2 the interpreter crashed.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
py=${BNFAST_VALGRIND_PYTHON:-.venv/bin/python}
jobs=${BNFAST_VALGRIND_JOBS:-$(nproc)}
tmp=$(mktemp -d /tmp/bnfast-memcheck.XXXXXX)
# PYTHONMALLOC=malloc: every CPython and numpy allocation is a malloc block memcheck can bound.
# --partial-loads-ok=no: a vector load that hangs off the end of a buffer is an error too.
memcheck() {
  PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=no --track-origins=yes \
    --partial-loads-ok=no --num-callers=40 --suppressions=tools/valgrind.supp \
    --log-file="$tmp/memcheck.%p.log" "$@"
}

rc=0
if [ "${1:-}" = --script ]; then
  script=$(cd "$here" && realpath "$2")  # keep it outside the source tree (its dir leads sys.path)
  shift 2
  memcheck "$py" "$script" "$@" || rc=$?
else
  # Not the comparisons with PyTorch: importing torch alone takes ~2.5 min under valgrind, per
  # job, and the same shapes go through the kernels in the rest of the sweep.
  # The bfloat16 paths' edge tests too (empty and degenerate shapes, sizes around the vector
  # widths, NaN rows, refused input, mixed optimizer lists, the rounding's special values).
  bf16='empty or degenerate or edge or sizes or nan or one_value or batch_of_one or mixed_list'
  bf16="$bf16 or special or bad or refuse"
  [ "$#" -gt 0 ] || set -- tests/test_edges.py tests/test_bfloat16.py \
    tests/test_bfloat16_batch_norm.py tests/test_bfloat16_softmax.py tests/test_bfloat16_optim.py \
    -q -k "(test_edges and not pytorch) or (bfloat16 and not torch and ($bf16))"
  # A plugin: the hypothesis profile conftest.py loads (it honours HYPOTHESIS_PROFILE; valgrind
  # runs ~50x slower), and every JOBS-th test from the i-th for job i.
  cat >"$tmp/bnfast_valgrind.py" <<EOF
import os, pytest
from hypothesis import HealthCheck, settings
settings.register_profile("valgrind", max_examples=${BNFAST_VALGRIND_EXAMPLES:-5}, deadline=None,
                          suppress_health_check=list(HealthCheck))
selected = 0
@pytest.hookimpl(trylast=True)  # after -k and -m
def pytest_collection_modifyitems(config, items):
    global selected
    i, n = map(int, os.environ["BNFAST_VALGRIND_SHARD"].split("/"))
    selected = len(items)
    config.hook.pytest_deselected(items=[t for k, t in enumerate(items) if k % n != i])
    items[:] = items[i::n]
def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 5 and selected:
        session.exitstatus = 0  # the other jobs ran this one's share
EOF
  export PYTHONPATH="$tmp${PYTHONPATH:+:$PYTHONPATH}" HYPOTHESIS_PROFILE=valgrind
  # No plugin autoload: pytest-benchmark's start-up (cpuinfo, git) costs ~45 s under valgrind.
  export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
  # The pytest script (not python -m pytest) keeps the source tree off sys.path.
  pids=()
  for ((i = 0; i < jobs; i++)); do
    BNFAST_VALGRIND_SHARD=$i/$jobs memcheck "$py" "$(dirname "$py")/pytest" \
      -p _hypothesis_pytestplugin -p bnfast_valgrind -p no:cacheprovider "$@" \
      >"$tmp/pytest.$i.txt" 2>&1 &
    pids+=($!)
  done
  for ((i = 0; i < jobs; i++)); do
    wait "${pids[i]}" || rc=$?
    echo "--- pytest, share $((i + 1)) of $jobs:"
    cat "$tmp/pytest.$i.txt"
  done
fi

# One record per blank "==pid== " line; error records start with one of memcheck's error kinds.
# CPython 3.11 leaves the digit of a zero int unset (python/cpython#119022, see valgrind.supp):
# the small int 0 it then returns taints every copy of that pointer, wherever it goes, so an
# uninitialised value whose origin is _PyLong_New is not ours, even if our bindings use it.
kinds='Invalid (read|write|free)|Mismatched free|Conditional jump|Use of uninit|Syscall param|Source and destination overlap|Argument .* fishy'
records() { awk -v want="$1" -v kinds="^==[0-9]+== ($kinds)" 'BEGIN {RS = "==[0-9]+== \n"}
  $0 ~ kinds { o = index($0, "Uninitialised value was created")
    ours = $0 ~ /bnfast\/_core|bnfast::/ && !(o && substr($0, o) ~ /: _PyLong_New /)
    if (ours == want) printf "%s\n", $0 }' "$tmp"/memcheck.*.log; }
ours=$(records 1)
other=$(records 0 | grep -E "^==[0-9]+== ($kinds)" | sed -E 's/^==[0-9]+== //' | sort | uniq -c || true)
grep -h "ERROR SUMMARY" "$tmp"/memcheck.*.log
[ -z "$other" ] || { echo "error contexts outside bnfast (not failing the job):"; echo "$other"; }
if [ -n "$ours" ]; then
  echo "memcheck errors in bnfast:"
  echo "$ours" | cut -c1-300
  echo "full logs: $tmp/memcheck.*.log"
  exit 1
fi
echo "no memcheck error in bnfast (exit status $rc; logs: $tmp/memcheck.*.log)"
exit "$rc"
