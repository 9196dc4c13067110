"""The README's examples run as written: its Python blocks (training shortened to keep the suite
fast) and its commands, from the repository root as a newcomer types them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bnfast

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text() if README.exists() else ""
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
MODULES = sorted(set(re.findall(r"python -m (bnfast[\w.]*)", TEXT)))


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    if re.search(r"^import torch$", code, re.M):  # bnfast.torch's examples, as its own tests
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    code = code.replace("epochs=30", "epochs=2")
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
    assert MODULES, "the README names no `python -m bnfast...` command"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args",
    [["-c", "import bnfast; bnfast.show_config()"], *(["-m", m] for m in MODULES)],
    ids=lambda args: " ".join(args),
)
def test_readme_command_from_the_repository_root(args):
    """``python -m``/``-c`` put the current directory first on ``sys.path``, so from the root
    ``import bnfast`` finds the source folder. With an editable install (``pip install -e .``,
    this development setup) that folder is the package and the command runs; after a plain
    ``pip install .`` it shadows the installed package, and the error says what to run."""
    out = _run([sys.executable, *args], ROOT)
    if Path(bnfast.__file__).resolve().parent == ROOT / "bnfast":
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode != 0 and "pip install -e ." in out.stderr, out.stderr


def test_console_script_from_the_repository_root():
    """``bnfast info`` (the README's main command) runs anywhere: a console script's
    ``sys.path`` starts with its own folder, not the current directory."""
    script = shutil.which("bnfast", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the bnfast console script is not installed next to this interpreter")
    out = _run([script, "info"], ROOT)
    assert out.returncode == 0, out.stderr
    assert "active_isa:" in out.stdout


@pytest.mark.parametrize("case", ["source-tree", "not-a-checkout", "broken-extension"])
def test_missing_extension_says_what_to_run(tmp_path, case):
    """A copy of ``bnfast/__init__.py`` without the compiled ``_core``, imported from its
    parent directory with ``site`` off (so no installed bnfast or editable finder answers)."""
    package = tmp_path / "bnfast"
    package.mkdir()
    shutil.copy(ROOT / "bnfast" / "__init__.py", package)
    if case == "source-tree":
        (tmp_path / "pyproject.toml").write_text('[project]\nname = "bnfast"\n')
    if case == "broken-extension":
        (tmp_path / "pyproject.toml").write_text('[project]\nname = "bnfast"\n')
        (package / "_core.py").write_text('raise ImportError("undefined symbol: x")\n')
    out = _run([sys.executable, "-S", "-c", "import bnfast"], tmp_path)
    assert out.returncode != 0
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: bnfast's compiled extension")
    assert str(package.resolve()) in message
    if case == "source-tree":
        assert "this is the source tree" in message
        assert "Run from another directory" in message and message.endswith("pip install -e .")
    else:
        assert "source tree" not in message and "pip install --force-reinstall" in message
    if case == "broken-extension":
        assert "could not be imported (undefined symbol: x)" in message
    else:
        assert "is missing" in message
