#!/usr/bin/env python
"""The edge's parts in onnxruntime against torch: agreement on real photos, and time in the same run.

    .venv/bin/python scripts/bench_edge_runtime.py --repeats 7 --json edge_runtime.json

Agreement (per photo, MobileSAM real weights): the split model (`tinyvit-isolated`, default fusion, 2
in-process workers) and the monolithic one, each with the edge in torch and in onnxruntime: max abs
difference of the embedding (split: fusion + neck in ONNX), of the mask logits and IoU predictions, and the
number of mask pixels that differ, for a centre point, a foreground + background point pair and a box.

Timing: the edge's parts alone, on one photo's real inputs, torch and onnxruntime interleaved (the order
alternates every repeat, so that a busy machine slows both alike), median of `--repeats`:
prompt encoder + mask decoder for 1 prompt and for a batch of 64 (the automatic mask generator's batch), and
fusion + neck. Both runtimes use the same number of threads (`--threads`, default torch's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def _prompts(h: int, w: int) -> dict[str, dict[str, np.ndarray]]:
    return {
        "centre point": dict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1])),
        "fg + bg points": dict(point_coords=np.array([[w / 4, h / 3], [3 * w / 4, h / 2]]), point_labels=np.array([1, 0])),
        "box": dict(box=np.array([w / 5, h / 5, 4 * w / 5, 4 * h / 5])),
    }


def agreement(model: Any, photo_names: list[str], workers: int) -> list[dict[str, Any]]:
    from pedvit.data.photos import photo
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.edge.onnx_runtime import use_edge_runtime
    from pedvit.edge.predictor import SamPredictor

    rows = []
    for name in photo_names:
        image = photo(name).image
        prompts = _prompts(*image.shape[:2])
        for setting in ("split", "monolithic"):
            outputs: dict[str, Any] = {}
            for runtime in ("torch", "onnx"):
                predictor = (DistributedSamPredictor(model, in_process_workers(model, workers), seed=0)
                             if setting == "split" else SamPredictor(model))
                use_edge_runtime(predictor, runtime)
                predictor.set_image(image)
                outputs[runtime] = (predictor.get_image_embedding().clone(),
                                    {k: predictor.predict(**p, return_logits=True) for k, p in prompts.items()})
                getattr(predictor, "close", lambda: None)()
            embedding_diff = float((outputs["onnx"][0] - outputs["torch"][0]).abs().max())
            for prompt in prompts:
                (logits_t, iou_t, _), (logits_o, iou_o, _) = outputs["torch"][1][prompt], outputs["onnx"][1][prompt]
                rows.append({
                    "photo": name, "setting": setting, "prompt": prompt,
                    "embedding_max_abs_diff": embedding_diff,
                    "logits_max_abs_diff": float(np.abs(logits_o - logits_t).max()),
                    "iou_max_abs_diff": float(np.abs(iou_o - iou_t).max()),
                    "mask_pixels_different": int(((logits_o > 0) != (logits_t > 0)).sum()),
                    "mask_pixels": int((logits_t > 0).sum()),
                })
    return rows


def timing(model: Any, photo_name: str, repeats: int, workers: int) -> dict[str, dict[str, float]]:
    from pedvit.data.photos import photo
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.edge.onnx_runtime import OnnxFusionNeck, OnnxPromptDecoder

    image = photo(photo_name).image
    predictor = DistributedSamPredictor(model, in_process_workers(model, workers), seed=0)
    plan = predictor.plan
    captured: dict[str, torch.Tensor | None] = {}

    def capture(features: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        captured["stitched"], captured["context"] = features.clone(), None if context is None else context.clone()
        plan.edge_head = None
        try:
            return plan.fuse_and_neck(model, features, context)
        finally:
            plan.edge_head = capture

    plan.edge_head = capture  # records the real stitched features and context pass of this photo
    predictor.set_image(image)
    plan.edge_head = None
    features = predictor.features
    stitched, context = captured["stitched"], captured["context"]
    assert stitched is not None
    decoder, head = OnnxPromptDecoder(model), OnnxFusionNeck(model, plan.fusion)
    h, w = image.shape[:2]
    one = predictor.transform.apply_coords(np.array([[w / 2, h / 2]]), (h, w))
    grid = (np.stack(np.meshgrid(np.linspace(0.06, 0.94, 8), np.linspace(0.06, 0.94, 8)), -1).reshape(-1, 2) * [w, h])
    batch = predictor.transform.apply_coords(grid, (h, w))
    inputs = {
        "1 prompt": (torch.tensor(one, dtype=torch.float32)[None], torch.ones(1, 1, dtype=torch.int64)),
        "64 prompts": (torch.tensor(batch, dtype=torch.float32)[:, None], torch.ones(64, 1, dtype=torch.int64)),
    }
    tasks: dict[str, dict[str, Callable[[], Any]]] = {}
    for label, (coords, labels) in inputs.items():
        tasks[f"prompt encoder + mask decoder, {label}"] = {
            "torch": lambda c=coords, l=labels: predictor.decode_low_res(c, l),
            "onnx": lambda c=coords, l=labels: decoder(features, c, l),
        }
    tasks["fusion + neck"] = {"torch": lambda: plan.fuse_and_neck(model, stitched, context), "onnx": lambda: head(stitched, context)}
    seconds: dict[str, dict[str, list[float]]] = {task: {"torch": [], "onnx": []} for task in tasks}
    with torch.inference_mode():
        for task in tasks.values():  # warm-up: first calls allocate and pick kernels
            for run in task.values():
                run()
        for repeat in range(repeats):
            for task, runs in tasks.items():
                order = ("torch", "onnx") if repeat % 2 == 0 else ("onnx", "torch")
                for runtime in order:
                    started = time.perf_counter()
                    runs[runtime]()
                    seconds[task][runtime].append(time.perf_counter() - started)
    predictor.close()
    return {task: {runtime: statistics.median(values) for runtime, values in runs.items()} for task, runs in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default="astronaut,coffee,chelsea")
    parser.add_argument("--timing-photo", default="astronaut")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="in-process workers of the split runs")
    parser.add_argument("--threads", type=int, default=None, help="threads of both runtimes (default: torch's)")
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pedvit.models import build_model

    model = build_model("mobile_sam")
    rows = agreement(model, [p for p in args.photos.split(",") if p], args.workers)
    print("| photo | setting | prompt | embedding max abs diff | logits max abs diff | IoU max abs diff | mask pixels different |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['setting']} | {r['prompt']} | {r['embedding_max_abs_diff']:.2e} | {r['logits_max_abs_diff']:.2e} | "
              f"{r['iou_max_abs_diff']:.2e} | {r['mask_pixels_different']} of {r['mask_pixels']} |")
    times = timing(model, args.timing_photo, args.repeats, args.workers)
    print(f"\nmedian of {args.repeats}, {torch.get_num_threads()} thread(s) each, interleaved:")
    print("| edge part | torch | onnxruntime | onnxruntime / torch |")
    print("|---|---|---|---|")
    for task, value in times.items():
        print(f"| {task} | {1000 * value['torch']:.1f} ms | {1000 * value['onnx']:.1f} ms | {value['onnx'] / value['torch']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "repeats": args.repeats,
                                               "agreement": rows, "timing_s": times}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
