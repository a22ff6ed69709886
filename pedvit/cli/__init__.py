"""The `pedvit` command line (also `python -m pedvit`). Each command group is a module of this package with a
`register(subparsers)`; the library modules it drives hold no command-line code."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import signal
import threading

from pedvit.cloud.heap import limit_heap_growth

from . import bench, certs, cluster, data, demo, evaluate, ledger, plans, segment, video, worker

#: The command modules, in the order their commands appear in --help.
COMMANDS = (segment, video, plans, worker, cluster, ledger, certs, data, evaluate, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedvit", description="Privacy-enhanced distributed SAM inference (PED-SAM).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and worker events")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


#: options whose value may start with a minus sign (argparse would take "-5,10" for an option)
_SIGNED_VALUE_OPTIONS = ("--point", "--box")


def _join_signed_values(argv: list[str]) -> list[str]:
    """``--point -5,10`` -> ``--point=-5,10`` so that negative coordinates parse."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SIGNED_VALUE_OPTIONS and i + 1 < len(argv) and re.match(r"^-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_signed_values(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Every command (workers, and the edge computing windows on its fan-out threads) is long-running and
    # multi-threaded: fewer malloc arenas keep resident memory down (docs/hardening.md, memory).
    limit_heap_growth()
    # SIGTERM (docker stop, systemd, Kubernetes) unwinds like Ctrl-C: `finally` blocks stop local workers.
    # (`pedvit worker` installs its own graceful handler.)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
