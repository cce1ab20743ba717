"""``python -m leakage attack ...``: the attack command without the secagg CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from leakage.cli import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leakage",
                                     description="gradient-inversion attacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
