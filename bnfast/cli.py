"""The ``bnfast`` command."""

from __future__ import annotations

import argparse
import sys

import bnfast


def _info(args: argparse.Namespace) -> int:
    bnfast.show_config()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnfast", description=bnfast.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bnfast {bnfast.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="version, ISA in use, available ISAs, threads")
    p.set_defaults(func=_info)
    from bnfast.tune.cli import add_parser as add_tune

    add_tune(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
