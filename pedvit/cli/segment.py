"""`pedvit segment IMAGE ...`: segment one image, distributed over workers (default: local gRPC workers).

    pedvit segment photo.jpg --point 320,240 --out mask.png --overlay overlay.png --views views.png --json r.json
    pedvit segment photo.jpg --cluster .pedvit/cluster.json --ledger ledger.jsonl
    pedvit segment photo.jpg --monolithic            # the whole model here (reference)
    pedvit segment photo.jpg --everything --json masks.json --overlay masks.png   # automatic masks
    pedvit segment photos/ --everything --out-dir results/   # a folder (see pedvit.cli.segment_batch)

Modes: default starts `--local N` worker subprocesses on loopback, runs distributed and stops them;
`--workers`/`--cluster` use running workers; `--in-process` uses in-process executors (no network);
`--monolithic` runs the unsplit model. Bad input (missing/unreadable image, bad prompt) exits with code 2.
"""

from __future__ import annotations

import argparse
import sys

from pedvit.edge.cluster import ClusterError
from pedvit.edge.engine import PrivacyConstraintError
from pedvit.partition.detectors import DetectorError

from .segment_batch import register_arguments, run_batch, wants_batch
from .segment_one import InputError, add_predictor_arguments, load_image, parse_box, parse_point, run_segment

__all__ = ["InputError", "load_image", "register", "run_segment"]


def _cmd_segment(args: argparse.Namespace) -> int:
    if wants_batch(args):  # several images, a folder, or --everything
        return run_batch(args)
    args.image = args.image[0]
    try:
        result = run_segment(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ClusterError, PrivacyConstraintError, DetectorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{result['mode']}: mask area {result['mask_area']} px ({100 * result['mask_fraction']:.1f}%), "
        f"score {result['scores'][result['best']]:.3f}, encode {result['timings'].get('encode_s', 0):.2f} s"
        + (f", {len(result['failovers'])} failover(s)" if result.get("failovers") else "")
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `pedvit segment`."""
    p = subparsers.add_parser("segment", help="segment an image (distributed over workers by default)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="+", help="image file(s) (any format Pillow reads) or folder(s) of images")
    p.add_argument("--point", action="append", type=parse_point, metavar="X,Y[,LABEL]",
                   help="prompt point in pixels (label 1 foreground, default; 0 background); repeatable")
    p.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="prompt box in pixels")
    p.add_argument("--multimask", action="store_true", help="predict 3 masks and keep the best-scored")
    add_predictor_arguments(p)
    p.add_argument("--out", default=None, metavar="MASK.png", help="mask PNG (0/255, original size)")
    p.add_argument("--overlay", default=None, metavar="OVERLAY.png")
    p.add_argument("--views", default=None, metavar="VIEWS.png", help="what each worker received")
    p.add_argument("--json", default=None, metavar="RESULT.json")
    register_arguments(p)  # --everything and its options, --out-dir, --edge-runtime
    p.set_defaults(func=_cmd_segment)
    return p
