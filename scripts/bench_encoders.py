#!/usr/bin/env python
"""Encoder speed against the upstream reference implementation, in one run, on the same input.

ViT-B: one random state dict loaded into both (timing does not depend on weights); MobileSAM: the real
weights. Prints median seconds per forward, the speed ratio (reference / pedvit) and the max abs difference.

    .venv/bin/python scripts/bench_encoders.py [--repeats 5] [--threads 2] [--models mobile_sam,vit_b]

A target's PASS / FAIL is printed only when the per-pair ratios agree (spread < 20 %) and the load average
stayed within the cores; otherwise "noisy, no verdict".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference_sam  # noqa: E402  (test helper: upstream code + stand-ins for its torchvision/timm imports)

from pedvit.models import build_model  # noqa: E402


#: a verdict is printed only when the per-pair speed ratios spread less than this (max - min) / median
MAX_RATIO_SPREAD = 0.2


def time_pair(reference: torch.nn.Module, ours: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Alternate reference and pedvit forwards; each pair gives one speed ratio (machine noise hits both alike)."""
    ref_times, our_times = [], []
    with torch.inference_mode():
        ref_out, our_out = reference(x), ours(x)  # warm-up, and the outputs to compare
        for _ in range(repeats):
            started = time.perf_counter()
            reference(x)
            ref_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            ours(x)
            our_times.append(time.perf_counter() - started)
    ratios = [r / o for r, o in zip(ref_times, our_times)]
    speedup = statistics.median(ratios)
    return {"reference_s": statistics.median(ref_times), "pedvit_s": statistics.median(our_times),
            "pedvit_min_s": min(our_times), "speedup": speedup, "ratio_spread": (max(ratios) - min(ratios)) / speedup,
            "max_abs_diff": (ref_out - our_out).abs().max().item()}


def verdict(result: dict[str, float], target: float, load: tuple[float, float], cores: int) -> str:
    """PASS / FAIL only on a run that can support it; otherwise why not."""
    if result["max_abs_diff"] > 1e-4:
        return f">= {target}x: FAIL (outputs differ by {result['max_abs_diff']:.1e} > 1e-4)"
    if result["ratio_spread"] > MAX_RATIO_SPREAD or max(load) > cores + 0.5:
        return (f">= {target}x: noisy, no verdict (ratio spread {result['ratio_spread']:.0%}, load average "
                f"{load[0]:.1f} -> {load[1]:.1f} on {cores} cores)")
    return f">= {target}x: {'PASS' if result['speedup'] >= target else 'FAIL'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="mobile_sam,vit_b")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    targets = {"vit_b": 1.8, "mobile_sam": 1.5}
    rows = []
    for name in args.models.split(","):
        if name == "vit_b":
            reference, ours = reference_sam.vit_b_pair(seed=1)
        elif name == "mobile_sam":
            reference = reference_sam.mobile_sam_reference().image_encoder
            ours = build_model("mobile_sam").image_encoder
        else:
            raise SystemExit(f"unknown model {name!r}")
        load_before = os.getloadavg()[0]
        result = time_pair(reference.eval(), ours.eval(), x, args.repeats)
        rows.append((name, result, (load_before, os.getloadavg()[0])))
    cores = os.cpu_count() or 1
    print(f"threads={args.threads} repeats={args.repeats}, interleaved (median seconds per 1024x1024 forward; "
          f"speedup = median of the per-pair ratios, spread = (max - min) / median)")
    print(f"{'model':<12}{'reference s':>12}{'pedvit s':>10}{'speedup':>9}{'spread':>8}{'max|diff|':>11}  target")
    for name, r, load in rows:
        print(f"{name:<12}{r['reference_s']:>12.2f}{r['pedvit_s']:>10.2f}{r['speedup']:>8.2f}x{r['ratio_spread']:>8.0%}"
              f"{r['max_abs_diff']:>11.1e}  {verdict(r, targets[name], load, cores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
