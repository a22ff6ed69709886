"""The `pedvit` command line. Each command lives beside the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Modules that provide `register_cli(subparsers)`, in the order their commands appear in --help.
COMMAND_MODULES = (
    "pedvit.edge.segment_cli",     # segment
    "pedvit.plans.cli",            # plans
    "pedvit.cloud.worker",         # worker
    "pedvit.edge.cluster",         # cluster up/down/status
    "pedvit.edge.ledger_cli",      # ledger check
    "pedvit.transport.tls",        # certs
    "pedvit.data.cli",             # data fetch
    "pedvit.eval.cli",             # eval accuracy/privacy, bench [schedule]
    "pedvit.web.app",              # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedvit", description="Privacy-enhanced distributed SAM inference (PED-SAM).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and worker events")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # command not built (yet): leave it out of the CLI
                continue
            raise
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
