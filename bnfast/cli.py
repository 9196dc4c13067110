"""The ``bnfast`` command: ``info``, ``demo`` and ``train``.

Exit codes: 0 success; 1 unusable data or a failed run (the message says why); 2 a bad
command line (argparse's convention, with the usage line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import bnfast

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _Fail(Exception):
    """An error reported as ``bnfast <command>: error: ...`` with exit code 1."""


def _info(args: argparse.Namespace) -> int:
    bnfast.show_config()
    return EXIT_OK


# --- argument types: a bad value is a usage error (exit 2) naming the flag ---------------------


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _dropout(text: str) -> float:
    return _fraction(text)


def _widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 256,128,64, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return widths


def _add_network_flags(p: argparse.ArgumentParser, epochs: int) -> None:
    g = p.add_argument_group("network and training")
    g.add_argument("--epochs", type=_positive_int, default=epochs, help=f"default {epochs}")
    g.add_argument("--batch-size", type=_positive_int, default=64, help="default 64")
    g.add_argument("--lr", type=_positive_float, default=2e-3, help="Adam learning rate (2e-3)")
    g.add_argument("--seed", type=int, default=0, help="weights, split and shuffles (0)")
    g.add_argument(
        "--hidden", type=_widths, default=[256, 128, 64], metavar="W1,W2,...",
        help="hidden layer widths (256,128,64)",
    )  # fmt: skip
    g.add_argument("--no-bn", action="store_true", help="no batch norm after the hidden layers")
    g.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32",
        help="activations' dtype; bfloat16 keeps float32 master weights (needs ml_dtypes)",
    )  # fmt: skip
    g.add_argument("--dropout", type=_dropout, default=0.0, help="dropout probability (0)")
    g.add_argument("--out", default=None, metavar="DIR", help="output directory")
    g.add_argument(
        "--timing-epochs", type=_nonneg_int, default=5, metavar="N",
        help="epochs timed on each backend, native vs NumPy reference (5; 0 skips)",
    )  # fmt: skip
    g.add_argument(
        "--blas-threads", type=_nonneg_int, default=1, metavar="N",
        help="threads for NumPy's BLAS (1: these matrix products are too small to gain from "
        "more, and on a busy machine threaded BLAS can be 10x slower; 0 keeps BLAS's default; "
        "needs threadpoolctl, which scikit-learn brings)",
    )  # fmt: skip
    g.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnfast",
        description=bnfast.__doc__.splitlines()[0],
        epilog="Exit codes: 0 success, 1 bad data or failed run, 2 bad command line.",
    )
    parser.add_argument("--version", action="version", version=f"bnfast {bnfast.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="version, ISA in use, available ISAs, threads")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "demo",
        help="train an MLP on the 8x8 digits; speed vs the NumPy reference; learning curves",
        description=(
            "Train a 3-hidden-layer MLP (batch norm, ReLU, softmax cross-entropy, Adam) on the "
            "8x8 digits scikit-learn ships, print the test accuracy and the time per epoch on "
            "the native kernels and on the NumPy reference, and write the learning curves "
            'to a PNG. Needs the demo extra: pip install "bnfast[demo]".'
        ),
    )
    _add_network_flags(p, epochs=30)
    p.set_defaults(func=_demo, out_default="bnfast-demo", compare_dtypes=True)

    p = sub.add_parser(
        "train",
        help="train the same network on your own .npz (X, y)",
        description=(
            "Train the demo's network on a .npz file holding X (N, features...) and integer "
            "labels y (N,) in [0, num_classes). The data is split into train / validation / "
            "test with --seed and standardised with the training statistics."
        ),
    )
    p.add_argument("data", metavar="DATA.npz", help="file with arrays X and y")
    _add_network_flags(p, epochs=20)
    g = p.add_argument_group("data and checkpoints")
    g.add_argument("--num-classes", type=_positive_int, default=None,
                   help="number of classes (default: max(y) + 1)")  # fmt: skip
    g.add_argument("--val-fraction", type=_fraction, default=0.2, help="default 0.2")
    g.add_argument("--test-fraction", type=_fraction, default=0.2, help="default 0.2")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="write a checkpoint (.npz) after every epoch")  # fmt: skip
    g.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.set_defaults(func=_train, out_default="bnfast-train", timing_epochs=0, compare_dtypes=False)

    from bnfast.tune.cli import add_parser as add_tune

    add_tune(sub)
    from bnfast.bench import add_parser as add_bench

    add_bench(sub)
    return parser


# --- shared pieces ---------------------------------------------------------------------------


def _build(
    args: argparse.Namespace, in_features: int, num_classes: int, backend: str,
    dtype: str | None = None,
) -> Any:  # fmt: skip
    from bnfast.nn import mlp

    try:
        return mlp(
            in_features, args.hidden, num_classes, batch_norm=not args.no_bn,
            dropout=args.dropout, seed=args.seed, backend=backend, dtype=dtype or args.dtype,
        )  # fmt: skip
    except ImportError as exc:  # bfloat16 without ml_dtypes
        raise _Fail(str(exc)) from None


def _optimizer(args: argparse.Namespace, model: Any, backend: str) -> Any:
    from bnfast.train import make_optimizer

    return make_optimizer("adam", model.parameters(), model.gradients(), backend, lr=args.lr)


def _time_backends(
    args: argparse.Namespace, split: Any, num_classes: int
) -> dict[str, list[float]]:
    """Seconds per training epoch on each backend, interleaved so drift hits both alike."""
    from bnfast.train import fit

    times: dict[str, list[float]] = {"native": [], "numpy": []}
    models = {}
    for backend in times:
        model = _build(args, split.X_train.shape[1], num_classes, backend)
        models[backend] = (model, _optimizer(args, model, backend))
    for epoch in range(args.timing_epochs + 1):  # the first round warms up, untimed
        for backend, (model, opt) in models.items():
            h = fit(model, split.X_train, split.y_train, opt, epochs=1, batch_size=args.batch_size,
                    seed=args.seed + epoch, progress=False)  # fmt: skip
            if epoch:
                times[backend].append(h.time[0])
    return times


def _blas_threads(n: int) -> contextlib.AbstractContextManager[Any]:
    if n == 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _run(args: argparse.Namespace, split: Any, name: str, num_classes: int) -> int:
    with _blas_threads(args.blas_threads):
        return _run_limited(args, split, name, num_classes)


def _run_limited(args: argparse.Namespace, split: Any, name: str, num_classes: int) -> int:
    from bnfast.train import evaluate, fit, plot_history, save_checkpoint

    out_dir = args.out if args.out is not None else args.out_default
    os.makedirs(out_dir, exist_ok=True)
    model = _build(args, split.X_train.shape[1], num_classes, "native")
    opt = _optimizer(args, model, "native")
    print(
        f"{name}: {len(split.y_train)} train / {len(split.y_val)} validation / "
        f"{len(split.y_test)} test samples, {split.X_train.shape[1]} features, "
        f"{num_classes} classes"
    )
    arch = " -> ".join(str(w) for w in [split.X_train.shape[1], *args.hidden, num_classes])
    print(
        f"network: {arch}, {'batch norm, ' if not args.no_bn else ''}ReLU, softmax "
        f"cross-entropy, Adam lr={args.lr:g}, {args.dtype}; ISA {bnfast.active_isa()}, "
        f"{bnfast.get_num_threads()} threads"
    )
    checkpoint = getattr(args, "checkpoint", None)
    validation = (split.X_val, split.y_val) if len(split.y_val) else None
    t0 = time.perf_counter()
    try:
        history = fit(
            model, split.X_train, split.y_train, opt, epochs=args.epochs,
            batch_size=args.batch_size, validation=validation, seed=args.seed,
            checkpoint=checkpoint, resume=getattr(args, "resume", False),
            progress=not args.no_progress,
        )  # fmt: skip
    except (ValueError, KeyError) as exc:  # e.g. a checkpoint of another network
        raise _Fail(f"training failed: {exc}") from None
    train_s = time.perf_counter() - t0
    if len(split.y_test):
        test_loss, test_acc = evaluate(model, split.X_test, split.y_test)
        print(f"test accuracy: {test_acc:.2%} (loss {test_loss:.4f}), trained in {train_s:.1f} s")
    else:
        test_loss = test_acc = float("nan")
        print(f"no test split (--test-fraction 0); trained in {train_s:.1f} s")
    save_checkpoint(os.path.join(out_dir, "model.npz"), model, opt, None, len(history), history)
    summary: dict[str, Any] = {"test_loss": test_loss, "test_accuracy": test_acc,
                               "history": history.as_dict()}  # fmt: skip

    if args.timing_epochs:
        times = _time_backends(args, split, num_classes)
        # Best of N: the machine is shared, and interference only ever adds time.
        native, ref = min(times["native"]), min(times["numpy"])
        print(
            f"time per epoch (best of {args.timing_epochs}): native kernels "
            f"{native * 1e3:.1f} ms, NumPy reference {ref * 1e3:.1f} ms: {ref / native:.2f}x"
        )
        print("  (the matrix products are NumPy BLAS on both; batch norm, softmax cross-entropy"
              " and Adam are what differ)")  # fmt: skip
        summary["epoch_seconds"] = times
    if args.compare_dtypes:
        summary["dtypes"] = _compare_dtypes(args, split, num_classes, history, test_acc)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    try:
        png = plot_history(history, os.path.join(out_dir, "learning_curves.png"),
                           title=f"{name}: test accuracy {test_acc:.2%}")  # fmt: skip
        print(f"learning curves: {png}")
    except ImportError:
        print('matplotlib is not installed: no learning-curve plot (pip install "bnfast[demo]")')
    print(f"model and optimizer state: {os.path.join(out_dir, 'model.npz')}")
    return EXIT_OK


def _compare_dtypes(
    args: argparse.Namespace, split: Any, num_classes: int, history: Any, test_acc: float
) -> dict[str, Any]:
    """Trains the same network in the other activation dtype and prints both runs' accuracy
    and time per epoch (median over the epochs)."""
    from bnfast.train import evaluate, fit

    other = "bfloat16" if args.dtype == "float32" else "float32"
    runs = {args.dtype: (test_acc, statistics.median(history.time))}
    try:
        model = _build(args, split.X_train.shape[1], num_classes, "native", other)
    except _Fail as exc:
        print(f"{other}: not run ({exc})")
        return {}
    opt = _optimizer(args, model, "native")
    h = fit(model, split.X_train, split.y_train, opt, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, progress=False)  # fmt: skip
    acc = evaluate(model, split.X_test, split.y_test)[1] if len(split.y_test) else float("nan")
    runs[other] = (acc, statistics.median(h.time))
    for dt in ("float32", "bfloat16"):
        acc, t = runs[dt]
        print(f"{dt + ':':<10}test accuracy {acc:.2%}, {t * 1e3:.1f} ms per epoch")
    print("  (bfloat16: float32 master weights and matrix products, bfloat16 activations")
    print("  between the layers; NumPy's own bfloat16 arithmetic, ml_dtypes', is slow)")
    return {dt: {"test_accuracy": a, "epoch_seconds": t} for dt, (a, t) in runs.items()}


def _demo(args: argparse.Namespace) -> int:
    from bnfast.data import load_digits

    try:
        split = load_digits(seed=args.seed)
    except ImportError as exc:
        raise _Fail(str(exc)) from None
    return _run(args, split, "digits", split.num_classes)


def _train(args: argparse.Namespace) -> int:
    from bnfast.data import DataError, load_npz, split_standardize

    if args.resume and args.checkpoint is None:
        raise _Fail("--resume needs --checkpoint PATH")
    try:
        X, y = load_npz(args.data, num_classes=args.num_classes)
        split = split_standardize(X, y, args.val_fraction, args.test_fraction, seed=args.seed)
    except (OSError, DataError) as exc:
        raise _Fail(str(exc)) from None
    return _run(args, split, os.path.basename(args.data), args.num_classes or split.num_classes)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except _Fail as exc:
        print(f"bnfast {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"bnfast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
