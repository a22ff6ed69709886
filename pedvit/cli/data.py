"""`pedvit data fetch`: fetch the pinned evaluation data the repository does not ship (see :mod:`pedvit.data.fetch`)."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any


def _fetch(args: argparse.Namespace) -> int:
    from pedvit.data.fetch import fetch_labelme_voc

    folder = fetch_labelme_voc(pathlib.Path(args.dir) if args.dir else None)
    print(folder)
    return 0


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="evaluation data that is fetched, not shipped")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_sub.add_parser("fetch", help="fetch the voc-labelme ground truth (3 VOC photos, 12 instances) from the "
                                              "labelme 6.3.1 sdist on the package index; pinned by sha256")
    fetch.add_argument("--dir", default=None, help="data folder (default $PEDVIT_DATA_DIR or ~/.cache/pedvit/data; "
                                                   "the evaluation reads the default)")
    fetch.set_defaults(func=_fetch)
