#!/usr/bin/env bash
# valgrind memcheck over tools/leak_check.py (every binding, error paths included). Fails if a
# "definitely lost" block was allocated under bnfast's extension module; CPython's own
# end-of-run records are reported in the summary but not counted.
#
#   tools/valgrind_leaks.sh [python]     # default: python3 (with bnfast installed)
# valgrind cannot run AVX-512 code; it hides AVX-512 from CPUID, so bnfast picks AVX2 at most.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
log=$(mktemp /tmp/bnfast-valgrind.XXXXXX)
cd /tmp  # import the installed package, not the source tree
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --num-callers=40 --log-file="$log" \
  "$py" "$OLDPWD/tools/leak_check.py" 5
grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost" "$log" | tail -5
# A definite-leak record whose allocation stack passes through _core.
ours=$(awk '/definitely lost in loss record/{rec=$0; inrec=1; next} inrec && /bnfast\/_core|bnfast::/{print rec; inrec=0} /^==[0-9]+== $/{inrec=0}' "$log" | sort -u)
if [ -n "$ours" ]; then
  echo "definite leaks in bnfast:"; echo "$ours"; echo "full log: $log"
  exit 1
fi
echo "no definite leak in bnfast (full log: $log)"
