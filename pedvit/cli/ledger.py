"""`pedvit ledger check FILE`: audit a ledger written by the split engine against the privacy constraints."""

from __future__ import annotations

import argparse
import sys

from pedvit.edge.ledger import check_ledger


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        count, problems = check_ledger(args.file)
    except FileNotFoundError:
        print(f"error: ledger {args.file} not found", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as error:  # not a ledger, or a record missing fields
        print(f"error: {args.file}: malformed ledger ({type(error).__name__}: {error})", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"VIOLATION {problem}")
    print(f"{count} request(s) checked, {len(problems)} violation(s)")
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pedvit ledger check FILE` (exit 0 clean, 1 violations, 2 unreadable)."""
    p = subparsers.add_parser("ledger", help="audit ledgers")
    sub = p.add_subparsers(dest="ledger_command", metavar="ACTION")
    check = sub.add_parser("check", help="check every request record against the privacy constraints")
    check.add_argument("file", help="JSON-lines ledger (--ledger of `pedvit segment`)")
    check.set_defaults(func=_cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p
