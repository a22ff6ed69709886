"""One image for `pedvit segment`: reading it, checking its prompts, building the predictor (local, running or
in-process workers, or the monolithic model), running it and writing the files. The command itself
(`pedvit.cli.segment`) and batches (`pedvit.cli.segment_batch`) build on this module."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from pedvit.edge.build import WorkerSet, WorkerSource, open_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.predictor import SamPredictor
from pedvit.models import Sam, build_model
from pedvit.partition import WindowGrid
from pedvit.privacy.views import view_masks, view_sheet

class InputError(ValueError):
    """Bad user input (exit code 2)."""


# ---------------------------------------------------------------------------------------------- parsing
def parse_point(text: str) -> tuple[float, float, int]:
    """"X,Y" or "X,Y,LABEL" (LABEL 1 foreground, 0 background) -> (x, y, label)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"point must be X,Y or X,Y,LABEL, got {text!r}") from None
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point label must be 1 (foreground) or 0 (background), got {label}")
    return x, y, label


def parse_probability(text: str) -> float:
    """"P" with 0 <= P <= 1 (e.g. `--spot-check`) -> P."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text!r}")
    return value


def parse_box(text: str) -> tuple[float, float, float, float]:
    """"X0,Y0,X1,Y1" -> box."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"box must be X0,Y0,X1,Y1, got {text!r}")
    return values  # type: ignore[return-value]


def load_image(path: str | Path) -> np.ndarray:
    """Any Pillow-readable image -> H x W x 3 uint8 RGB, EXIF orientation applied (grayscale/RGBA/palette ok)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image {p} not found")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: a would-be bomb is refused either way
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as image:
                image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "P"):
                    # Composite transparency on white so transparent pixels don't become arbitrary colours.
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba)
                return np.array(image.convert("RGB"), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"image {p} is too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, MemoryError) as error:
        raise InputError(f"cannot read image {p}: {error}") from None


def check_prompts(points: Any, box: Any, shape: tuple[int, int]) -> None:
    """InputError unless every prompt is finite and lies on the image (`shape` = H x W), before any work."""
    h, w = shape
    for x, y in (points if points is not None else []):
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"point ({x}, {y}) is not a finite coordinate")
        if not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"point ({x:g}, {y:g}) lies outside the {w} x {h} image")
    if box is not None:
        x0, y0, x1, y1 = box
        if not np.isfinite(box).all():
            raise InputError(f"box {tuple(box)} is not finite")
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have X0 < X1 and Y0 < Y1")
        if x1 < 0 or y1 < 0 or x0 > w or y0 > h:
            raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w} x {h} image")


# ------------------------------------------------------------------------------------------ predictor
def add_predictor_arguments(p: argparse.ArgumentParser) -> None:
    """The model, mode (local / in-process / running / cluster workers, or monolithic), plan, scheme, ledger and
    credential options that `build_predictor` reads (`pedvit segment`, `pedvit video`)."""
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
    # semantic by default: a user's face or a document's text must not leave the device unless they ask for it
    p.add_argument("--scheme", default="semantic", choices=("contiguous", "interleaved", "random", "semantic"),
                   help="window assignment (default semantic: interleaved, with --keep-local windows kept on the edge)")
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


def worker_source(args: argparse.Namespace) -> WorkerSource:
    """Where `pedvit segment`'s workers come from (`--in-process` runs `--local` in-process executors)."""
    addresses = tuple(a.strip() for a in (args.workers or "").split(",") if a.strip())
    return WorkerSource(local=args.local, in_process=args.local if args.in_process else 0, addresses=addresses,
                        cluster_file=args.cluster, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                        token_file=args.token_file, checkpoint=args.checkpoint)


def close_predictor(predictor: SamPredictor, workers: WorkerSet | None) -> None:
    """Close what `build_predictor` opened: the predictor's engine (if it has one), then its workers."""
    close = getattr(predictor, "close", None)
    if close is not None:
        close()
    if workers is not None:
        workers.close()


def build_predictor(args: argparse.Namespace, model: Sam) -> tuple[SamPredictor, WorkerSet | None]:
    """(predictor, its workers to close after the request; None for --monolithic) for the parsed arguments."""
    if args.monolithic:
        return SamPredictor(model), None
    options: dict[str, Any] = dict(
        plan=args.plan, scheme=args.scheme, halo_px=args.halo, window_tokens=args.window_tokens,
        fusion="off" if args.no_fusion else "auto",
        ledger=args.ledger, wire_dtype=args.wire_dtype, allow_local=not args.no_local_compute,
        hide_positions=not args.reveal_positions, keep_local_classes=args.keep_local, spot_check=args.spot_check,
    )
    source = worker_source(args)
    started = time.perf_counter()
    workers = open_workers(model, source)
    if workers.mode == "local":
        print(f"started {args.local} local worker(s) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    try:
        return DistributedSamPredictor(model, workers.executors, **options), workers
    except BaseException:
        workers.close()
        raise


# -------------------------------------------------------------------------------------------- pictures
def worker_views(record: Any, grid: WindowGrid) -> dict[str, np.ndarray]:
    """name -> H x W bool mask of the original pixels each worker received (window crops incl. halo);
    "edge" -> the windows the edge computed itself."""
    views = view_masks(grid, {name: w.windows for name, w in record.workers.items()}, record.halo_px)
    views["edge"] = grid.original_mask(sorted(set(record.local_windows) & set(grid.content_ids)), 0)
    return views


def render_overlay(image: np.ndarray, mask: np.ndarray, points: np.ndarray | None, labels: np.ndarray | None, box: Any) -> np.ndarray:
    """The image with the mask blended in blue, prompt points (green fg / red bg) and the box."""
    out = image.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * np.array([30, 144, 255])
    picture = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    r = max(3, round(max(image.shape[:2]) / 150))
    if points is not None and labels is not None:
        for (x, y), label in zip(points, labels):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 0) if label else (220, 0, 0), outline=(255, 255, 255))
    if box is not None:
        draw.rectangle(list(box), outline=(255, 215, 0), width=max(2, r // 2))
    return np.array(picture)


def _save_png(array: np.ndarray, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


# ------------------------------------------------------------------------------------------------ main
Prompt = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]


def prompt_from_args(args: argparse.Namespace, h: int, w: int) -> Prompt:
    """(N x 2 points, N labels, 4 box) from --point/--box; neither: the centre point of the H x W image.
    Checked against the image here, before the model loads and any window leaves the edge."""
    points = labels = None
    if args.point:
        points = np.array([[x, y] for x, y, _ in args.point], dtype=np.float64)
        labels = np.array([lab for _, _, lab in args.point], dtype=np.int64)
    box = np.array(args.box, dtype=np.float64) if args.box else None
    if points is None and box is None:
        points, labels = np.array([[w / 2, h / 2]]), np.array([1])  # no prompt: the centre point
    check_prompts(points, box, (h, w))
    return points, labels, box


def run_segment(args: argparse.Namespace, prepared: tuple[Any, str, Any] | None = None) -> dict[str, Any]:
    """Segment `args.image`; write the requested files; return the JSON result. `prepared`: (predictor, mode
    name, model) set up by the caller, who closes it (several images, `pedvit.cli.segment_batch`)."""
    image = load_image(args.image)
    points, labels, box = prompt = prompt_from_args(args, *image.shape[:2])
    if args.no_local_compute and args.monolithic:
        raise InputError("--no-local-compute makes no sense with --monolithic")
    workers = None
    if prepared is not None:
        predictor, mode, model = prepared
    else:
        try:
            model = build_model(args.model, args.checkpoint)
        except (ValueError, KeyError, FileNotFoundError) as error:
            raise InputError(f"cannot load model {args.model!r}: {error}") from None
        try:
            predictor, workers = build_predictor(args, model)
        except (ValueError, FileNotFoundError) as error:  # bad plan/halo/scheme/credential paths
            raise InputError(str(error)) from None
        mode = workers.mode if workers else "monolithic"
    try:
        if prepared is None:
            from pedvit.edge.onnx_runtime import use_edge_runtime

            use_edge_runtime(predictor, getattr(args, "edge_runtime", "torch"))
        predictor.set_image(image)
        try:
            masks, scores, _ = predictor.predict(points, labels, box, multimask_output=args.multimask)
        except ValueError as error:
            raise InputError(str(error)) from None
        record = getattr(predictor, "last_run", None)
        grid = getattr(getattr(predictor, "engine", None), "last_grid", None)
    finally:
        if prepared is None:
            close_predictor(predictor, workers)
    result = _result(args, image, model.name, mode, prompt, masks, scores, predictor.timings)
    mask = masks[result["best"]]
    if record is not None:
        result.update(_record_summary(record, args.ledger))
        result["timings"].update({f"engine_{k}": float(v) for k, v in record.timings.items()})
        result["timings"]["edge_compute_s"] = float(record.edge_compute_s)
    _write_files(args, image, mask, prompt, record, grid, result)
    return result


def _result(args: argparse.Namespace, image: np.ndarray, model_name: str, mode: str, prompt: Prompt,
            masks: np.ndarray, scores: np.ndarray, timings: dict[str, float]) -> dict[str, Any]:
    """The JSON result without the run record: the best of the C x H x W masks by score."""
    points, labels, box = prompt
    best = int(np.argmax(scores))
    return {
        "image": str(args.image),
        "image_size": list(image.shape[:2]),
        "model": model_name,
        "mode": mode,
        "prompt": {
            "points": points.tolist() if points is not None else None,
            "labels": labels.tolist() if labels is not None else None,
            "box": box.tolist() if box is not None else None,
        },
        "scores": [float(s) for s in scores],
        "best": best,
        "mask_area": int(masks[best].sum()),
        "mask_fraction": float(masks[best].mean()),
        "timings": {k: float(v) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
    }


def _record_summary(record: Any, ledger: str | None) -> dict[str, Any]:
    """The run record's part of the JSON result: plan, assignment, per-worker traffic and times."""
    return dict(
        plan=record.plan, scheme=record.scheme, halo_px=record.halo_px, window_tokens=record.window_tokens,
        wire_dtype=record.wire_dtype, positions_hidden=record.positions_hidden,
        request_id=record.request_id, local_windows=sorted(record.local_windows), failovers=record.failovers,
        workers={
            name: {
                "windows": sorted(wr.windows), "boxes": {str(k): v for k, v in sorted(wr.boxes.items())},
                "bytes_sent": wr.bytes_sent, "bytes_received": wr.bytes_received, "calls": wr.calls,
                "compute_s": wr.compute_s, "wall_s": wr.wall_s, "failed": wr.failed, "errors": wr.errors,
            }
            for name, wr in record.workers.items()
        },
        ledger=str(ledger) if ledger else None,
        sensitive=record.extra.get("sensitive"),
    )


def _write_files(args: argparse.Namespace, image: np.ndarray, mask: np.ndarray, prompt: Prompt, record: Any, grid: Any,
                 result: dict[str, Any]) -> None:
    """--out, --overlay, --views and --json."""
    if args.out:
        _save_png((mask * 255).astype(np.uint8), args.out)
    if args.overlay:
        _save_png(render_overlay(image, mask, *prompt), args.overlay)
    if args.views:
        if record is None or grid is None:
            print("note: --views needs a distributed run; skipped for --monolithic", file=sys.stderr)
        else:
            hidden = any(record.positions_hidden.values())
            caption = ("workers received their windows shuffled and without positions; placed here by the edge's map"
                       if hidden else "")
            _save_png(view_sheet(image, worker_views(record, grid), caption=caption), args.views)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
