#!/usr/bin/env bash
# Test built wheels as a user gets them, not the source tree: per wheel, a fresh venv with no
# compiler on PATH installs it with `pip install --no-index --only-binary=:all:` (so pip cannot
# build anything from source), then runs `bnfast info`, the README's kernel example, and pytest
# from the repository root (the `pytest` script with --import-mode=importlib does not put the
# source folder on sys.path; tests/test_wheel.py checks that bnfast comes from site-packages and
# that the wheel carries its files and bundles every library it needs).
#
#   bash tools/test_wheels.sh [--full] [--torch] [--venv DIR] WHEEL...
#     --full      the whole suite (default: a quick subset)
#     --torch     with the `torch` extra (PyTorch 2.13 CPU; it has a wheel here for CPython 3.11)
#     --venv DIR  make the venv at DIR (emptied first) and keep it (one wheel only; CI's later
#                 steps use it); by default a temporary venv, removed after its tests
#
# Dependencies are downloaded first (normal index) into build/wheel-deps/<tag>/, then installed
# from there with --no-index together with the wheel.
set -euo pipefail

full=0
torch=0
keep=
wheels=()
while (($#)); do
  case "$1" in
    --full) full=1; shift ;;
    --torch) torch=1; shift ;;
    --venv) keep=$(realpath -m "$2"); shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "test_wheels.sh: unknown option $1" >&2; exit 2 ;;
    *) wheels+=("$(realpath "$1")"); shift ;;
  esac
done
((${#wheels[@]})) || { echo "test_wheels.sh: no wheel given" >&2; exit 2; }
if [[ -n $keep ]] && ((${#wheels[@]} > 1)); then
  echo "test_wheels.sh: --venv takes one wheel, got ${#wheels[@]}" >&2
  exit 2
fi
cd "$(dirname "$0")/.." # after the arguments: their relative paths are the caller's
root=$PWD

# The subset every Python runs: the wheel's own checks, ISA dispatch, the stub, the optimizers,
# the command line (the demo on the digits, its plot).
quick=(tests/test_wheel.py tests/test_isa.py tests/test_core_stub.py tests/test_optim.py
  tests/test_cli.py)

# A PATH without compilers or build tools: every program of /usr/local/bin, /usr/bin and /bin
# except those, linked into one folder.
nocc=$(mktemp -d /tmp/bnfast-nocc.XXXXXX)
trap 'rm -rf "$nocc"' EXIT
for dir in /usr/local/bin /usr/bin /bin; do
  for f in "$dir"/*; do
    name=${f##*/}
    [[ -x $f && ! -d $f && ! -e $nocc/$name ]] || continue
    [[ $name =~ ^(cc|c\+\+|c89|c99|cpp|gcc|g\+\+|clang|clang\+\+|ld|ld\.bfd|ld\.gold|cmake|ninja|make)(-[0-9.]+)?$ ]] && continue
    [[ $name =~ -(gcc|g\+\+|cpp|c\+\+|ld)(-[0-9.]+)?$ ]] && continue
    ln -s "$f" "$nocc/$name"
  done
done
command -v objdump >/dev/null || { apt-get update -qq && apt-get install -y -qq binutils; }
[[ -e $nocc/objdump ]] || ln -s "$(command -v objdump)" "$nocc/objdump"
# torch.compile's default backend (inductor) compiles the C++ it generates: that is PyTorch's
# requirement, not the wheel's. Its one test (tests/test_torch_compile.py) is told where g++ is
# by CXX (which inductor reads; nothing else in the tests does) and gcc finds ld through
# COMPILER_PATH; pip, run before them, sees neither.
inductor_env=()
if cxx=$(command -v g++); then
  inductor_env=(CXX="$(readlink -f "$cxx")" COMPILER_PATH="$(dirname "$(command -v ld)")")
fi

python_for_tag() { # cp312 -> pyenv's newest 3.12, else python3.12 on PATH
  local v="${1:2:1}.${1:3}" root=${PYENV_ROOT:-$HOME/.pyenv} found
  found=$(ls -d "$root"/versions/"$v".*/bin/python 2>/dev/null | sort -V | tail -1 || true)
  [[ -n $found ]] || found=$(command -v "python$v" || true)
  [[ -n $found ]] || { echo "test_wheels.sh: no Python $v for $1" >&2; return 1; }
  echo "$found"
}

# The README's first Python block (the kernels example), as a user would paste it.
example=$(awk '/^## Kernels/{k=1} k && /^```python/{f=1; next} f && /^```/{exit} f' README.md)

for whl in "${wheels[@]}"; do
  name=${whl##*/}
  tag=$(echo "$name" | cut -d- -f3)
  py=$(python_for_tag "$tag")
  extras=test
  ((torch)) && extras=test,torch
  echo "== $name: CPython $("$py" -c 'import platform; print(platform.python_version())'), extras [$extras], $( ((full)) && echo whole suite || echo quick subset)"
  start=$SECONDS
  work=$(mktemp -d /tmp/bnfast-wheeltest.XXXXXX)
  venv=${keep:-$work/venv}
  "$py" -m venv --clear "$venv"
  deps=$root/build/wheel-deps/$tag
  mkdir -p "$deps"
  "$venv/bin/pip" download -q --only-binary=:all: -d "$deps" "$whl[$extras]"
  (
    export PATH="$venv/bin:$nocc"
    unset CC CXX CPP LD CFLAGS CXXFLAGS
    for tool in cc c++ gcc g++ clang cmake; do
      if command -v "$tool" >/dev/null; then echo "test_wheels.sh: $tool is on PATH" >&2; exit 1; fi
    done
    pip install -q --no-index --only-binary=:all: --find-links "$deps" "$whl[$extras]"
    pip show bnfast | sed -n '1,2p'
    if ((torch)); then python -c 'import torch; print("PyTorch", torch.__version__)'; fi
    cd "$work" # from elsewhere too: nothing here shadows the installed package
    bnfast info
    scalar_info=$(BNFAST_ISA=scalar bnfast info)
    grep '^active_isa: *scalar$' <<<"$scalar_info" >/dev/null
    printf '%s\n' "$example" > readme_example.py
    python readme_example.py
    BNFAST_ISA=scalar python readme_example.py
    cd "$root"
    args=(-q -p no:cacheprovider)
    ((full)) || args+=("${quick[@]}")
    env ${inductor_env[@]+"${inductor_env[@]}"} BNFAST_EXPECT_WHEEL=1 pytest "${args[@]}"
  )
  rm -rf "$work"
  echo "== $name: passed in $((SECONDS - start)) s"
done
