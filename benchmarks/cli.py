"""``secagg bench``: the unified benchmark entry point (:mod:`benchmarks.__main__`) as a
subcommand. Registering it imports nothing heavy."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``bench`` to argparse subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="run every benchmark and the protocol cost sweep; writes bench.json, bench.csv, PNG plots",
        description="Run every benchmark module present and the protocol cost sweep (ratios against "
        "the plaintext baseline measured in the same run).",
    )
    from benchmarks.__main__ import add_arguments

    add_arguments(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from benchmarks.__main__ import handle

    return handle(args)
