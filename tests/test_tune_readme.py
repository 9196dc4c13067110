"""The README's batch-norm experiment numbers are exactly what the command it names prints."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bnfast.tune.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

SENTENCE = re.compile(
    r"\*\*with batch norm ([\d.]+)% of the sampled configurations reach (\d+)% validation "
    r"accuracy, without it ([\d.]+)%\*\* \((\w+) configurations? reach the target only with "
    r"batch norm, (\w+) only without, (\w+) with both\)\. Batch norm does not raise the best "
    r"accuracy much \(([\d.]+)% vs ([\d.]+)%\)"
)


def _count(word: str) -> int:
    return 0 if word == "none" else int(word)


def test_readme_experiment_numbers_are_what_its_command_prints(tmp_path, capsys):
    pytest.importorskip("sklearn")
    text = README.read_text()
    commands = [ln for ln in text.splitlines() if ln.startswith("bnfast tune --experiment")]
    assert len(commands) == 1, "the README names one experiment command"
    args = shlex.split(commands[0])[2:]
    assert "--isa" in args, "the command pins the ISA: the numbers depend on it"
    for opt, value in (("--storage", tmp_path / "bn.db"), ("--plot", tmp_path / "plots")):
        if opt in args:
            args[args.index(opt) + 1] = str(value)
    args = [*args, "--no-progress"]
    prose = SENTENCE.search(" ".join(text.split()))
    assert prose, "the README's sentence with the experiment's numbers"
    assert main(args) == 0
    out = capsys.readouterr().out
    bn = re.search(r"batchnorm:\s+([\d.]+)% of (\d+) configurations reach ([\d.]+) \(best ([\d.]+)",
                   out)  # fmt: skip
    plain = re.search(r"plain:\s+([\d.]+)% of \d+ configurations reach [\d.]+ \(best ([\d.]+)", out)
    paired = re.search(r"paired: (\d+) reach only with batchnorm, (\d+) only with plain, "
                       r"(\d+) with both", out)  # fmt: skip
    assert bn and plain and paired, out
    assert prose[1] == bn[1] and prose[3] == plain[1]
    assert float(prose[2]) / 100 == float(bn[3])
    assert [_count(prose[i]) for i in (4, 5, 6)] == [int(paired[i]) for i in (1, 2, 3)]
    assert prose[7] == f"{100 * float(bn[4]):.1f}" and prose[8] == f"{100 * float(plain[2]):.1f}"
    assert f"--trials {bn[2]}" in commands[0]
