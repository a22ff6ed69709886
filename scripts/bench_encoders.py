#!/usr/bin/env python
"""Encoder speed against the upstream reference implementation, in one run, on the same input.

ViT-B: one random state dict loaded into both (timing does not depend on weights); MobileSAM: the real
weights. Prints median seconds per forward, the speed ratio (reference / pedvit) and the max abs difference.

    .venv/bin/python scripts/bench_encoders.py [--repeats 3] [--threads 2] [--models vit_b,mobile_sam]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference_sam  # noqa: E402  (test helper: upstream code + stand-ins for its torchvision/timm imports)

from pedvit.models import build_model  # noqa: E402


def time_pair(reference: torch.nn.Module, ours: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    ref_times, our_times = [], []
    with torch.inference_mode():
        ref_out, our_out = reference(x), ours(x)  # warm-up, and the outputs to compare
        for _ in range(repeats):  # interleaved, so machine noise hits both alike
            started = time.perf_counter()
            reference(x)
            ref_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            ours(x)
            our_times.append(time.perf_counter() - started)
    ref_s, our_s = statistics.median(ref_times), statistics.median(our_times)
    return {"reference_s": ref_s, "pedvit_s": our_s, "speedup": ref_s / our_s, "max_abs_diff": (ref_out - our_out).abs().max().item()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="vit_b,mobile_sam")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    rows = []
    for name in args.models.split(","):
        if name == "vit_b":
            reference, ours = reference_sam.vit_b_pair(seed=1)
            target = 1.8
        elif name == "mobile_sam":
            reference = reference_sam.mobile_sam_reference().image_encoder
            ours = build_model("mobile_sam").image_encoder
            target = None
        else:
            raise SystemExit(f"unknown model {name!r}")
        result = time_pair(reference, ours, x, args.repeats)
        rows.append((name, result, target))
    print(f"threads={args.threads} repeats={args.repeats} (median seconds per 1024x1024 forward)")
    print(f"{'model':<12}{'reference s':>12}{'pedvit s':>10}{'speedup':>9}{'max|diff|':>11}  target")
    for name, r, target in rows:
        verdict = "" if target is None else f">= {target}x: {'PASS' if r['speedup'] >= target and r['max_abs_diff'] <= 1e-4 else 'FAIL'}"
        print(f"{name:<12}{r['reference_s']:>12.2f}{r['pedvit_s']:>10.2f}{r['speedup']:>8.2f}x{r['max_abs_diff']:>11.1e}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
