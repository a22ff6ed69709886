"""`pedvit segment` on several images or folders, and `--everything` (automatic masks); `--edge-runtime`.

    pedvit segment photo.jpg --everything --monolithic --json masks.json --overlay masks.png
    pedvit segment photos/ more.jpg --everything --local 4 --out-dir results/
    pedvit segment photos/ --out-dir results/                 # a centre-point mask per photo
    pedvit segment photo.jpg --point 320,240 --edge-runtime onnx

With several inputs (or a folder: its files with an image extension, not recursive) the predictor (and its
workers) is set up once and every image goes through it, with a progress bar; in split runs the workers encode
image k+1 while the edge decodes image k (`pedvit.edge.pipeline`; `--no-pipeline` turns it off). Each image writes
``<stem>.json`` and ``<stem>.overlay.png`` (prompted: also ``<stem>.mask.png``) into ``--out-dir``, and
``summary.json`` lists what was written and what was skipped. An image that cannot be read (or any other
image's failure mid-batch) is reported, recorded in the summary and skipped; the rest of the batch completes.
Exit code: 0 all images done; 1 some skipped; 2 bad usage or no readable image at all.

`--everything` JSON (per image): ``masks``, each with ``area``, ``bbox`` [x, y, w, h], ``predicted_iou``,
``stability_score``, ``point_coords``, ``crop_box`` and ``segmentation`` (COCO RLE, compressed by default,
`--output-mode uncompressed_rle` for plain run lengths; `pedvit.edge.automatic_masks`); plus the options,
timings, filter counts and, for split runs, each encode's run record (which windows each worker received).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pedvit.privacy.views import PALETTE

from .segment_one import InputError, _save_png, build_predictor, close_predictor, load_image, run_segment

__all__ = ["register_arguments", "wants_batch", "collect_images", "run_batch", "render_masks_overlay", "everything_result"]

#: File extensions a folder's images are recognised by (case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

#: `--everything` options, forwarded to `SamAutomaticMaskGenerator` under these names.
GENERATOR_ARGUMENTS: tuple[tuple[str, type, Any, str], ...] = (
    ("points_per_side", int, 32, "points along each side of the image (N^2 point prompts)"),
    ("points_per_batch", int, 64, "point prompts the edge's decoder runs at once"),
    ("pred_iou_thresh", float, 0.88, "keep masks whose predicted IoU is above this"),
    ("stability_score_thresh", float, 0.95, "keep masks whose stability score is at least this"),
    ("stability_score_offset", float, 1.0, "logit offset of the stability score"),
    ("box_nms_thresh", float, 0.7, "box IoU above which duplicate masks are dropped"),
    ("crop_n_layers", int, 0, "extra layers of image crops (each crop is encoded once more)"),
    ("crop_nms_thresh", float, 0.7, "box IoU for duplicates between crops"),
    ("crop_overlap_ratio", float, 512 / 1500, "overlap of neighbouring crops (fraction of the short side)"),
    ("crop_n_points_downscale_factor", int, 1, "points per side shrink by this factor per crop layer"),
    ("min_mask_region_area", int, 0, "fill holes and drop islands smaller than this (px)"),
)


def register_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--everything`, its options, `--out-dir` and `--edge-runtime` to `pedvit segment`."""
    from pedvit.edge.onnx_runtime import EDGE_RUNTIMES

    parser.add_argument("--edge-runtime", default="torch", choices=EDGE_RUNTIMES,
                        help="run the edge's prompt encoder + mask decoder (and tinyvit-isolated's fusion + neck) in "
                             "onnxruntime or torch (default torch); graphs are exported once and cached")
    parser.add_argument("--out-dir", default=None, metavar="DIR",
                        help="several images or a folder: per-image JSON and pictures, and summary.json, go here")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="several images, split runs: encode each image only when the edge is done with the previous "
                             "one (default: the workers encode image k+1 while the edge decodes image k)")
    group = parser.add_argument_group("automatic masks (--everything)")
    group.add_argument("--everything", action="store_true",
                       help="segment everything: a grid of point prompts, filtered and deduplicated (segment-anything's "
                            "automatic mask generator); writes the masks as COCO RLE to --json and an --overlay")
    for name, kind, default, text in GENERATOR_ARGUMENTS:
        group.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=f"{text} (default {default:.4g})")
    group.add_argument("--output-mode", default="coco_rle", choices=("coco_rle", "uncompressed_rle"),
                       help="RLE form of each mask's segmentation (default coco_rle, pycocotools' compressed string)")


def wants_batch(args: argparse.Namespace) -> bool:
    """Does this `pedvit segment` call go through `run_batch` (several inputs, a folder, or --everything)?"""
    return bool(args.everything) or len(args.image) > 1 or any(Path(p).is_dir() for p in args.image)


def collect_images(inputs: list[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files given, and every image-suffixed file of the folders given (sorted, not recursive).

    Returns:
        (image paths in order, without duplicates; problems: {"image", "error"} for missing inputs and empty
        folders).
    """
    images: list[Path] = []
    problems: list[dict[str, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.name.startswith("."))
            if not found:
                problems.append({"image": str(path), "error": "folder holds no image files"})
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            problems.append({"image": str(path), "error": "not found"})
    unique = list(dict.fromkeys(p.resolve() for p in images))
    return [Path(p) for p in unique], problems


def _output_stems(images: list[Path]) -> list[str]:
    """A distinct file stem per image (photo.jpg and photo.png -> photo, photo-2)."""
    seen: dict[str, int] = {}
    stems = []
    for path in images:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def render_masks_overlay(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """The image with every mask blended in its own colour (largest first, so small masks stay visible) and
    its outline drawn: H x W x 3 uint8."""
    import cv2

    out = image.astype(np.float32)
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for rank, i in enumerate(order):
        colour = np.array(PALETTE[rank % len(PALETTE)], dtype=np.float32)
        out[masks[i]] = 0.45 * out[masks[i]] + 0.55 * colour
    picture = np.clip(out, 0, 255).astype(np.uint8)
    for rank, i in enumerate(order):
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(picture, contours, -1, PALETTE[rank % len(PALETTE)], 1)
    return picture


def everything_result(generator: Any, image: np.ndarray, image_path: str, mode: str, model_name: str,
                      edge_runtime: str) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run the automatic mask generator on one image: (the JSON result, the H x W bool masks for pictures)."""
    from pedvit.edge.automatic_masks import rle_to_mask

    started = time.perf_counter()
    records = generator.generate(image)
    seconds = time.perf_counter() - started
    masks = [rle_to_mask(r["segmentation"]) for r in records]
    result: dict[str, Any] = {
        "image": image_path,
        "image_size": [int(image.shape[0]), int(image.shape[1])],
        "model": model_name,
        "mode": mode,
        "edge_runtime": edge_runtime,
        "options": {name: getattr(generator, name) for name, *_ in GENERATOR_ARGUMENTS} | {"output_mode": generator.output_mode},
        "count": len(records),
        "masks": records,
        "timings": {"total_s": seconds, **generator.timings},
        "counts": dict(generator.counts),
    }
    if generator.runs:
        result["runs"] = [record.to_dict() for record in generator.runs]
    return result, masks


def _generator(args: argparse.Namespace, predictor: Any) -> Any:
    from pedvit.edge.automatic_masks import SamAutomaticMaskGenerator

    options = {name: getattr(args, name) for name, *_ in GENERATOR_ARGUMENTS}
    try:
        return SamAutomaticMaskGenerator(predictor, output_mode=args.output_mode, **options)
    except ValueError as error:
        raise InputError(str(error)) from None


def _check_outputs(args: argparse.Namespace, many: bool) -> None:
    if many:
        named = [f"--{k}" for k in ("json", "out", "overlay", "views") if getattr(args, k)]
        if named:
            raise InputError(f"with several images, {', '.join(named)} cannot name one file: give --out-dir DIR")
        if not args.out_dir:
            raise InputError("several images: give --out-dir DIR for the per-image JSON and pictures")
    elif args.everything and args.out:
        raise InputError("--out writes one prompted mask; --everything writes its masks to --json and an --overlay")
    if args.everything and (args.point or args.box):
        raise InputError("--everything prompts a grid of points itself: drop --point/--box")


def run_batch(args: argparse.Namespace) -> int:
    """`pedvit segment` for several images, folders or --everything; returns the exit code."""
    from pedvit.models import build_model

    from pedvit.edge.onnx_runtime import use_edge_runtime

    images, problems = collect_images(args.image)
    many = len(args.image) > 1 or any(Path(p).is_dir() for p in args.image)
    try:
        _check_outputs(args, many)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"skipped {problem['image']}: {problem['error']}", file=sys.stderr)
    if not images:
        print("error: no image to segment", file=sys.stderr)
        return 2
    if args.no_local_compute and args.monolithic:
        print("error: --no-local-compute makes no sense with --monolithic", file=sys.stderr)
        return 2
    from pedvit.edge.cluster import ClusterError

    try:
        model = build_model(args.model, args.checkpoint)
        predictor, workers = build_predictor(args, model)
        mode = workers.mode if workers else "monolithic"
    except (ValueError, KeyError, FileNotFoundError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ClusterError as error:  # workers that could not start: nothing was segmented
        print(f"error: {error}", file=sys.stderr)
        return 1
    out_dir = Path(args.out_dir) if args.out_dir else None
    done: list[dict[str, Any]] = []
    # Split runs of several images: the workers encode the next image while the edge decodes this one
    # (not with crop layers, which encode each image several times).
    pipelined = (args.pipeline and len(images) > 1 and getattr(predictor, "engine", None) is not None
                 and not (args.everything and args.crop_n_layers > 0))
    try:
        use_edge_runtime(predictor, args.edge_runtime)
        from tqdm import tqdm

        from pedvit.edge.pipeline import EncodedImage, PipelinedEmbeddings, PrecomputedPredictor

        decoder = PrecomputedPredictor(predictor) if pipelined else predictor
        generator = _generator(args, decoder) if args.everything else None
        stream = (PipelinedEmbeddings(predictor).run(images, load_image) if pipelined
                  else (EncodedImage(path) for path in images))  # encoded by the predictor itself, in turn
        stems = dict(zip(images, _output_stems(images)))
        for item in tqdm(stream, total=len(images), desc="segment", unit="image", file=sys.stderr, disable=len(images) < 2):
            path = item.key
            try:
                if item.error is not None:
                    raise RuntimeError(item.error)
                if pipelined:
                    decoder.use(item)
                done.append(_one_image(args, path, stems[path], out_dir, decoder, mode, model, generator, item.image))
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001 - one image's failure must not stop the batch
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                problems.append({"image": str(path), "error": message})
                tqdm.write(f"skipped {path}: {message}", file=sys.stderr)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        close_predictor(predictor, workers)
    if out_dir is not None:
        summary = {"mode": mode, "everything": bool(args.everything), "edge_runtime": args.edge_runtime,
                   "pipelined": pipelined, "done": done, "skipped": problems}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{mode}: {len(done)} image(s) done, {len(problems)} skipped"
          + (f"; {sum(d.get('masks', 0) for d in done)} masks" if args.everything else ""))
    return 0 if not problems else 1


def _one_image(args: argparse.Namespace, path: Path, stem: str, out_dir: Path | None, predictor: Any, mode: str,
               model: Any, generator: Any, image: np.ndarray | None) -> dict[str, Any]:
    """Segment one image of the batch (`image`: already loaded, or None); returns its summary row."""
    json_path = str(out_dir / f"{stem}.json") if out_dir else args.json
    overlay_path = str(out_dir / f"{stem}.overlay.png") if out_dir else args.overlay
    if generator is None:
        one = copy.copy(args)
        one.image, one.json, one.overlay = str(path), json_path, overlay_path
        one.out = str(out_dir / f"{stem}.mask.png") if out_dir else args.out
        result = run_segment(one, prepared=(predictor, mode, model))
        return {"image": str(path), "json": json_path, "mask_area": result["mask_area"]}
    image = load_image(path) if image is None else image
    result, masks = everything_result(generator, image, str(path), mode, model.name, args.edge_runtime)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result) + "\n", encoding="utf-8")
    if overlay_path:
        _save_png(render_masks_overlay(image, masks), overlay_path)
    if out_dir is None:
        print(f"{path}: {len(masks)} masks in {result['timings']['total_s']:.1f} s", file=sys.stderr)
    return {"image": str(path), "json": json_path, "masks": len(masks)}
