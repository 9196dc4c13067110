"""Stochastic rounding on a training run: an MLP on the 8x8 digits trained with bfloat16
parameters (``model.to(torch.bfloat16)``, bnfast.torch's SGD with momentum), the parameters
rounded to nearest or stochastically, beside the same run in float32.

    python bench/bf16_rounding.py [--epochs 40] [--lr 0.003]

Prints the training loss every 10 epochs and the final test accuracy of each run (needs
PyTorch and scikit-learn). With a small learning rate most updates are below half a bfloat16
step of the weight they change: rounding to nearest drops them, stochastic rounding keeps them
on average.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import bnfast.torch as bt
from bnfast.data import load_digits


def run(dtype: torch.dtype, epochs: int, lr: float, **opt_kw: object) -> tuple[list[float], float]:
    d = load_digits(seed=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    ).to(dtype)  # fmt: skip
    opt = bt.optim.SGD(net.parameters(), lr=lr, momentum=0.9, **opt_kw)
    x = torch.from_numpy(np.asarray(d.X_train, np.float32)).to(dtype)
    y = torch.from_numpy(np.asarray(d.y_train, np.int64))
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(y), generator=gen).split(32):
            opt.zero_grad()
            loss = bt.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(y))
    xt = torch.from_numpy(np.asarray(d.X_test, np.float32)).to(dtype)
    with torch.no_grad():
        acc = float((net(xt).float().argmax(1).numpy() == d.y_test).mean())
    return losses, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.003)
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = {
        "float32": run(torch.float32, args.epochs, args.lr),
        "bfloat16, nearest": run(torch.bfloat16, args.epochs, args.lr),
        "bfloat16, stochastic": run(
            torch.bfloat16, args.epochs, args.lr, stochastic_rounding=True, seed=0
        ),
    }
    marks = [e for e in range(10, args.epochs + 1, 10)] or [args.epochs]
    print("| parameters | " + " | ".join(f"loss, epoch {e}" for e in marks) + " | test accuracy |")
    print("|---|" + "--:|" * (len(marks) + 1))
    for name, (losses, acc) in runs.items():
        cells = [f"{losses[e - 1]:.4f}" for e in marks]
        print(f"| {name} | " + " | ".join(cells) + f" | {acc:.2%} |")
    print(f"(SGD, momentum 0.9, lr {args.lr:g}, batch 32, {args.epochs} epochs, 1 thread)")


if __name__ == "__main__":
    main()
