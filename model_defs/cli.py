"""`easerve models`: the registry as a table."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="only models of this task")
    parser.add_argument("--attention", choices=["ea", "sa"], help="only this attention kind")
    parser.add_argument("--bundled", action="store_true", help="only models shipped in weights/")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")


def run(args: argparse.Namespace) -> int:
    from easerve.model_defs.summary import model_table

    print(model_table(args.task, args.attention, True if args.bundled else None, args.markdown))
    return 0
