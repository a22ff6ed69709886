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
from .segment_one import InputError, load_image, parse_box, parse_point, parse_probability, run_segment

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
    p.add_argument("--model", default="mobile_sam")
    p.add_argument("--checkpoint", default=None)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--monolithic", action="store_true", help="run the whole model here (reference)")
    mode.add_argument("--in-process", action="store_true", help="split over in-process workers (no network)")
    mode.add_argument("--workers", metavar="HOST:PORT,...", help="running workers")
    mode.add_argument("--cluster", metavar="FILE", help="cluster file (see `pedvit cluster up`)")
    p.add_argument("--local", type=int, default=4, metavar="N",
                   help="workers started on loopback (or in process with --in-process) by default (4)")
    p.add_argument("--plan", default=None, help="split plan (default: the model's)")
    p.add_argument("--scheme", default="interleaved", choices=("contiguous", "interleaved", "random", "semantic"))
    p.add_argument("--keep-local", default="faces,text", metavar="CLASSES",
                   help="semantic scheme: sensitive classes whose windows never leave the edge, from faces,text,people "
                        "(default faces,text; 'none' for no detection)")
    p.add_argument("--halo", type=int, default=0, metavar="PX", help="context pixels around windows (multiple of 16)")
    p.add_argument("--window-tokens", type=int, default=14, metavar="T",
                   help="window side in tokens for tinyvit-isolated: 14 (224 px, default) or a multiple, e.g. 28 (448 px)")
    p.add_argument("--no-fusion", action="store_true",
                   help="skip the trained edge fusion module and the workers' window adapter (tinyvit-isolated applies both by "
                        "default; docs/fusion_and_dp.md)")
    p.add_argument("--wire-dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--reveal-positions", action="store_true",
                   help="send each window's origin and keep the window order (default: hidden where the plan "
                        "allows: tinyvit-isolated workers get their windows shuffled, without origins)")
    p.add_argument("--no-local-compute", action="store_true", help="the edge may not compute windows itself")
    p.add_argument("--spot-check", type=parse_probability, default=0.0, metavar="P",
                   help="probability that a worker answer gets one random window recomputed on the edge and compared "
                        "(catches plausible but wrong features; default 0: shape, dtype, finite values and feature "
                        "norms are checked on every answer regardless)")
    p.add_argument("--ledger", default=None, metavar="FILE", help="append an audit record (JSON line) here")
    p.add_argument("--tls-ca", default=None)
    p.add_argument("--tls-cert", default=None)
    p.add_argument("--tls-key", default=None)
    p.add_argument("--token-file", default=None)
    p.add_argument("--out", default=None, metavar="MASK.png", help="mask PNG (0/255, original size)")
    p.add_argument("--overlay", default=None, metavar="OVERLAY.png")
    p.add_argument("--views", default=None, metavar="VIEWS.png", help="what each worker received")
    p.add_argument("--json", default=None, metavar="RESULT.json")
    register_arguments(p)  # --everything and its options, --out-dir, --edge-runtime
    p.set_defaults(func=_cmd_segment)
    return p
