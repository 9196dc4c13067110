"""The ``bnfast`` command: demo end to end, train on .npz files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bnfast.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main

FAST = ["--epochs", "3", "--hidden", "64,32,32", "--timing-epochs", "1", "--no-progress"]


def _blobs_npz(path, n=120, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(classes, 6))
    y = rng.integers(0, classes, n)
    np.savez(path, X=centres[y] + rng.normal(size=(n, 6)), y=y)
    return path


def test_info(capsys):
    assert main(["info"]) == EXIT_OK
    assert "active_isa" in capsys.readouterr().out


def test_demo_end_to_end(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", *FAST, "--out", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "test accuracy:" in out
    assert "native kernels" in out and "NumPy reference" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.8
    assert len(summary["history"]["loss"]) == 3
    assert len(summary["epoch_seconds"]["native"]) == 1
    assert (tmp_path / "model.npz").exists()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        assert (tmp_path / "learning_curves.png").exists()


def test_demo_without_matplotlib_or_sklearn(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__
    blocked = {"matplotlib"}

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in blocked:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    pytest.importorskip("sklearn")
    args = ["demo", "--epochs", "1", "--hidden", "8,8,8", "--timing-epochs", "0", "--no-progress"]
    assert main([*args, "--no-bn", "--out", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and "batch norm" not in out
    assert not (tmp_path / "learning_curves.png").exists()
    blocked.add("sklearn")
    assert main([*args, "--out", str(tmp_path)]) == EXIT_ERROR
    assert "scikit-learn" in capsys.readouterr().err


def test_train_on_npz_with_checkpoint_and_resume(tmp_path, capsys):
    data = _blobs_npz(tmp_path / "blobs.npz")
    ckpt = tmp_path / "ck.npz"
    args = ["train", str(data), "--epochs", "3", "--hidden", "16,16,8", "--no-progress",
            "--out", str(tmp_path / "out"), "--checkpoint", str(ckpt)]  # fmt: skip
    assert main(args) == EXIT_OK
    out = capsys.readouterr().out
    assert "blobs.npz: 72 train / 24 validation / 24 test" in out and "test accuracy" in out
    assert ckpt.exists() and (tmp_path / "out" / "summary.json").exists()
    assert main([*args[:3], "5", *args[4:], "--resume"]) == EXIT_OK
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["history"]["epoch"] == [1, 2, 3, 4, 5]
    # a checkpoint of another network is refused with a message
    assert main([*args[:4], "--hidden", "8,8", *args[6:], "--resume"]) == EXIT_ERROR
    assert "training failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.zeros((10, 2)), "y": np.zeros(10, int)}, "missing key(s) X"),
        ({"X": np.zeros((10, 2)), "y": np.zeros((10, 2), int)}, "y must have shape (N,)"),
        ({"X": np.zeros((10, 2)), "y": np.zeros(9, int)}, "X has 10 samples but y has 9"),
        ({"X": np.zeros(10), "y": np.zeros(10, int)}, "X must have shape (N, features...)"),
        ({"X": np.zeros((10, 2)), "y": np.arange(10) - 1}, "label out of range: y[0] = -1"),
        ({"X": np.zeros((10, 2)), "y": np.arange(10) % 2 * 7}, "y[1] = 7 >= num_classes = 3"),
        ({"X": np.zeros((10, 2)), "y": np.linspace(0, 1, 10)}, "integer class labels"),
        ({"X": np.ones((10, 2)), "y": np.zeros(10, int)}, "single class"),
    ],
)
def test_train_bad_data_files(tmp_path, capsys, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    extra = ["--num-classes", "3"] if "num_classes" in message else []
    assert main(["train", str(path), "--out", str(tmp_path), *extra]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("bnfast train: error: ") and message in err


def test_train_unreadable_files(tmp_path, capsys):
    assert main(["train", str(tmp_path / "absent.npz")]) == EXIT_ERROR
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_text("hello")
    assert main(["train", str(tmp_path / "junk.npz")]) == EXIT_ERROR
    assert "cannot read" in capsys.readouterr().err
    data = _blobs_npz(tmp_path / "b.npz")
    assert main(["train", str(data), "--resume"]) == EXIT_ERROR
    assert "--resume needs --checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--epochs", "0"], "--epochs: must be >= 1"),
        (["demo", "--epochs", "ten"], "--epochs: expected an integer"),
        (["demo", "--batch-size", "-4"], "--batch-size: must be >= 1"),
        (["demo", "--lr", "0"], "--lr: must be a finite number > 0"),
        (["demo", "--lr", "nan"], "--lr: must be a finite number > 0"),
        (["demo", "--hidden", "64,x"], "--hidden: expected comma-separated"),
        (["demo", "--hidden", "64,0"], "--hidden: layer widths must be >= 1"),
        (["demo", "--dropout", "1"], "--dropout: must be in [0, 1)"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["train"], "the following arguments are required: DATA.npz"),
        (["train", "x.npz", "--val-fraction", "1.5"], "--val-fraction: must be in [0, 1)"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_command_lines(capsys, argv, message):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "usage: bnfast" in err and message in err


def test_help_and_version(capsys):
    assert main(["--help"]) == EXIT_OK
    assert "Exit codes" in capsys.readouterr().out
    assert main(["demo", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--seed", "--no-bn", "--out"):
        assert flag in out


def test_console_script_exit_code(tmp_path):
    """The installed command returns the exit code (here: a usage error) to the shell."""
    r = subprocess.run([sys.executable, "-m", "bnfast.cli", "demo", "--epochs", "0"],
                       capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert r.returncode == EXIT_USAGE and "--epochs" in r.stderr
