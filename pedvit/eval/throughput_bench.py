"""Throughput on a batch of photos: images per second, monolithic against N local workers, pipelining on/off.

    pedvit bench throughput --workers 1,2,4,8 --images 8 --points-per-side 8 --json throughput.json
    python -m pedvit.eval.throughput_bench ...                    # the same

Every image gets what `pedvit segment FOLDER --everything` does to it: one encode, then the automatic mask
generator's point grid on the edge's decoder (`--points-per-side`, 8 by default: 64 prompts, one decoder
batch; 0: one centre-point prompt instead). Configurations, all in one run on the same photos (the first
`--images` of `pedvit.data.photos`):

* ``monolithic``: `SamPredictor`, image after image;
* ``split N, sequential``: `DistributedSamPredictor` (`tinyvit-isolated`, default fusion) over the first N of
  a pool of `pedvit worker` processes on loopback, each image encoded when the edge is done with the last;
* ``split N, pipelined``: the same with `pedvit.edge.pipeline`: the workers encode image k+1 while the edge
  decodes image k.

Each configuration runs one warm-up image, then the batch; images/s = batch size / wall-clock seconds.
On a machine where workers and edge share the same few cores (the development machine), more workers
cannot add compute; the numbers show the overheads and the overlap, not a deployment's scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run_throughput", "format_table", "add_throughput_parser", "main"]


def _work(predictor: Any, image: np.ndarray, points_per_side: int) -> int:
    """The per-image edge work after the embedding: the number of masks it produced."""
    from pedvit.edge.automatic_masks import SamAutomaticMaskGenerator

    if points_per_side:
        return len(SamAutomaticMaskGenerator(predictor, points_per_side=points_per_side, output_mode="uncompressed_rle").generate(image))
    h, w = image.shape[:2]
    predictor.set_image(image)
    masks, _, _ = predictor.predict(np.array([[w / 2, h / 2]]), np.array([1]), multimask_output=False)
    return int(masks.any())


def _batch(predictor: Any, images: list[np.ndarray], points_per_side: int, pipelined: bool) -> tuple[float, int]:
    """(wall-clock seconds, masks) for the batch; `pipelined` uses `PipelinedEmbeddings`."""
    started = time.perf_counter()
    masks = 0
    if not pipelined:
        for image in images:
            masks += _work(predictor, image, points_per_side)
        return time.perf_counter() - started, masks
    from pedvit.edge.pipeline import PipelinedEmbeddings, PrecomputedPredictor

    decoder = PrecomputedPredictor(predictor)
    for item in PipelinedEmbeddings(predictor).run(range(len(images)), lambda i: images[i]):
        if item.error is not None:
            raise RuntimeError(f"image {item.key}: {item.error}")
        decoder.use(item)
        masks += _work(decoder, item.image, points_per_side)
    return time.perf_counter() - started, masks


def run_throughput(*, workers: Sequence[int] = (1, 2, 4, 8), n_images: int = 8, points_per_side: int = 8,
                   worker_threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """The benchmark (see the module docstring); returns its rows and settings."""
    from pedvit.data.photos import real_photos
    from pedvit.edge.cluster import start_local_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.edge.predictor import SamPredictor
    from pedvit.models import build_model

    photos = real_photos(min_count=n_images)[:n_images]
    images = [p.image for p in photos]
    model = build_model("mobile_sam")
    rows: list[dict[str, Any]] = []

    def record(name: str, n: int | None, pipelined: bool | None, predictor: Any) -> None:
        _work(predictor, images[0], points_per_side)  # warm-up
        seconds, masks = _batch(predictor, images, points_per_side, bool(pipelined))
        rows.append({"config": name, "workers": n, "pipelined": pipelined, "seconds": seconds,
                     "images_per_s": len(images) / seconds, "masks": masks})
        if progress:
            print(f"{name}: {len(images) / seconds:.3f} images/s ({seconds:.1f} s)", file=sys.stderr)

    record("monolithic", None, None, SamPredictor(model))
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(worker_threads)  # the worker processes' torch threads (inherited)
    try:
        pool = start_local_workers(max(workers), "mobile_sam")
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    try:
        executors = pool.executors()
        for n in workers:
            predictor = DistributedSamPredictor(model, executors[:n], seed=0)
            for pipelined in (False, True):
                record(f"split {n}, {'pipelined' if pipelined else 'sequential'}", n, pipelined, predictor)
    finally:
        pool.stop()
    return {"images": [p.name for p in photos], "points_per_side": points_per_side, "edge_threads": torch.get_num_threads(),
            "worker_threads": worker_threads, "rows": rows}


def format_table(results: dict[str, Any]) -> str:
    mono = next(r for r in results["rows"] if r["config"] == "monolithic")
    lines = ["| configuration | images/s | seconds for the batch | vs monolithic |", "|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['config']} | {row['images_per_s']:.3f} | {row['seconds']:.1f} | "
                     f"{row['images_per_s'] / mono['images_per_s']:.2f}x |")
    return "\n".join(lines)


def _add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts (comma-separated)")
    parser.add_argument("--images", type=int, default=8, help="photos in the batch")
    parser.add_argument("--points-per-side", type=int, default=8,
                        help="automatic-mask grid per image (0: one centre-point prompt instead)")
    parser.add_argument("--worker-threads", type=int, default=1, help="torch threads of each worker process")
    parser.add_argument("--json", default=None, metavar="FILE")


def _run(args: argparse.Namespace) -> int:
    try:
        workers = [int(v) for v in args.workers.split(",") if v.strip()]
    except ValueError:
        print(f"error: --workers must be comma-separated integers, got {args.workers!r}", file=sys.stderr)
        return 2
    if not workers or min(workers) < 1 or args.images < 1 or args.points_per_side < 0:
        print("error: --workers values and --images must be >= 1, --points-per-side >= 0", file=sys.stderr)
        return 2
    results = run_throughput(workers=workers, n_images=args.images, points_per_side=args.points_per_side,
                             worker_threads=args.worker_threads)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def add_throughput_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``throughput`` under the ``bench`` group (``pedvit bench throughput``)."""
    parser = bench_subparsers.add_parser("throughput", help="images/s on a batch of photos: monolithic vs N workers, "
                                                            "pipelining on/off", description=__doc__.split("\n\n")[0])
    _add_args(parser)
    parser.set_defaults(func=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedvit.eval.throughput_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_args(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
