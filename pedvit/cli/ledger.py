"""`pedvit ledger check FILE`: audit a ledger written by the split engine against the auditor's policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pedvit.edge.ledger import KEY_ENV, LedgerPolicy, check_ledger, ledger_head, ledger_key_from_env


def _cmd_check(args: argparse.Namespace) -> int:
    key = Path(args.key_file).read_bytes().strip() if args.key_file else ledger_key_from_env()
    classes = tuple(c for c in (args.keep_local or "").split(",") if c)
    policy = LedgerPolicy(args.max_windows_per_worker, args.max_share, classes, args.max_scene_coverage)
    try:
        count, problems = check_ledger(args.file, policy, key=key, head=args.head)
        _, head = ledger_head(args.file)
    except FileNotFoundError:
        print(f"error: ledger {args.file} not found", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # not a ledger, or a record missing fields
        print(f"error: {args.file}: malformed ledger ({type(error).__name__}: {error})", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"VIOLATION {problem}")
    if policy.max_windows_per_worker is None:
        print("note: windows per worker checked against the limit each record states; pass "
              "--max-windows-per-worker to check against your own policy")
    if key is None:
        print(f"note: no ledger key (--key-file or {KEY_ENV}): the hash chain is checked, the MACs are not")
    print(f"{count} request(s) checked, {len(problems)} violation(s); head {head} "
          "(keep it to detect records later cut from the end: --head)")
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pedvit ledger check FILE` (exit 0 clean, 1 violations, 2 unreadable)."""
    p = subparsers.add_parser("ledger", help="audit ledgers")
    sub = p.add_subparsers(dest="ledger_command", metavar="ACTION")
    check = sub.add_parser("check", help="check the hash chain and every request record against a policy")
    check.add_argument("file", help="JSON-lines ledger (--ledger of `pedvit segment`)")
    check.add_argument("--max-windows-per-worker", type=int, default=None, metavar="N",
                       help="most windows one worker may receive (default: the limit each record states)")
    check.add_argument("--max-share", type=float, default=None, metavar="F",
                       help="most of an image's content windows one worker may receive, as a fraction")
    check.add_argument("--keep-local", default=None, metavar="CLASSES",
                       help="sensitive classes whose detectors must have run on every request, e.g. faces,text")
    check.add_argument("--max-scene-coverage", type=float, default=None, metavar="F",
                       help="videos (`pedvit video`): most share of a video's scene one worker may have been sent over "
                            "all its frames (default: the cap the video's records state)")
    check.add_argument("--key-file", default=None, metavar="FILE",
                       help=f"the edge's ledger key, to verify each record's MAC (default: ${KEY_ENV})")
    check.add_argument("--head", default=None, metavar="HASH", help="a head printed by an earlier check: "
                       "the ledger must still contain that record")
    check.set_defaults(func=_cmd_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p
