"""`pedvit certs --out DIR [--names w1,w2] [--days N] [--force]`: a development CA plus worker and edge
certificates (`pedvit.transport.tls.generate_dev_pki`)."""

from __future__ import annotations

import argparse

from pedvit.transport.tls import generate_dev_pki


def _cmd_certs(args: argparse.Namespace) -> int:
    names = [n.strip() for n in (args.names or "").split(",") if n.strip()]
    paths = generate_dev_pki(args.out, names, days=args.days, overwrite=args.force)
    for p in paths.values():
        print(p)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pedvit certs`; sets `func(args) -> int`."""
    p = subparsers.add_parser("certs", help="generate a development CA plus worker and edge certificates")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--names", default="", help="comma-separated worker names (default: one 'worker')")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="overwrite an existing CA in --out")
    p.set_defaults(func=_cmd_certs)
    return p
