"""Video temporal-privacy evaluation on generated clips (no model needed).

1. Coverage: a camera pans over a large real photo (``pedvit.video.clips.pan_clip``); the camera motion is
   estimated from the pixels (``motion.track_offsets``) and each policy assigns every frame's SAM windows
   to the workers. What each worker has seen is measured with the *ground-truth* registration, as a share of
   the scene so far, after 30 / 100 / 300 frames, for naive per-frame assignment (pedvit's ``random`` and
   ``interleaved`` schemes), ``sticky`` and ``sticky + coverage cap``. The pasted object's windows are kept
   on the edge in every frame (a stand-in for a detected face or text).
2. Static-window reuse: on a static-camera clip, the share of windows that would be sent with
   ``reuse.WindowReuse`` against sending every content window of every frame.

Run: ``python -m pedvit.eval.video_eval`` (writes docs/video_results.json, docs/figures/video_coverage.png and
docs/figures/video_seen_maps.png).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any

import numpy as np

from pedvit.partition import WindowGrid
from pedvit.video.assign import NaivePolicy, ReplayResult, StickyPolicy, TemporalPolicy, replay
from pedvit.video.clips import Clip, pan_clip, scene_photo, static_clip
from pedvit.video.coverage import SceneCoverage, window_frame_boxes
from pedvit.video.motion import estimate_shift, track_offsets
from pedvit.video.reuse import WindowReuse

__all__ = ["coverage_experiment", "keep_local_from_masks", "main", "plot_coverage", "plot_seen_maps",
           "reuse_experiment"]

CHECKPOINTS = (30, 100, 300)
# confined sticky (workers kept to their own regions): the best of a small sweep on the 4-worker pan
# (regions 280..560 px, spill 32..80 px), so it is tuned to this clip
CONFINED_REGION_PX, CONFINED_SPILL_PX = 420, 48


def keep_local_from_masks(grid: WindowGrid, masks: np.ndarray) -> list[frozenset[int]]:
    """Per frame, the content windows that hold any pixel of the ``T x H x W`` bool masks."""
    boxes = window_frame_boxes(grid)
    return [
        frozenset(wid for wid, (y0, x0, y1, x1) in boxes.items() if m[y0:y1, x0:x1].any()) for m in masks
    ]


def _policies(n_workers: int, cap: float, region_px: int, seed: int) -> dict[str, tuple[TemporalPolicy, int]]:
    return {
        "naive-random": (NaivePolicy(n_workers, "random", seed=seed), n_workers),
        "naive-interleaved": (NaivePolicy(n_workers, "interleaved"), n_workers),
        "sticky": (StickyPolicy(n_workers, region_px=region_px), n_workers),
        f"sticky+cap{cap:.2f}": (StickyPolicy(n_workers, region_px=region_px, coverage_cap=cap), n_workers),
        f"sticky+cap{cap:.2f} confined": (
            StickyPolicy(n_workers, region_px=CONFINED_REGION_PX, coverage_cap=cap, spill_px=CONFINED_SPILL_PX),
            n_workers),
        f"sticky+cap{cap:.2f} ({2 * n_workers} workers)": (
            StickyPolicy(2 * n_workers, region_px=region_px, coverage_cap=cap), 2 * n_workers),
    }


def _summary(result: ReplayResult, n_frames: int, keep: list[frozenset[int]]) -> dict[str, Any]:
    at = {str(c): [round(float(v), 4) for v in result.coverage[c - 1]] for c in CHECKPOINTS if c <= n_frames}
    return {
        "coverage_at": at,
        "max_worker_scene_coverage": round(float(result.coverage[-1].max()), 4),
        "max_worker_scene_coverage_any_frame": round(float(result.coverage.max()), 4),
        "policy_estimate_max": round(float(result.policy_coverage.max()), 4),
        "local_per_frame_mean": round(float(result.local_per_frame.mean()), 2),
        "local_per_frame_max": int(result.local_per_frame.max()),
        # beyond the keep-local windows: what the policy itself kept on the edge
        "held_back_per_frame_mean": round(float(np.mean(result.local_per_frame - [len(k) for k in keep])), 2),
        "sent_per_frame_mean": round(float(result.sent_per_frame.mean()), 2),
        "max_coverage_curve": [round(float(v), 4) for v in result.coverage.max(axis=1)],
        "min_coverage_curve": [round(float(v), 4) for v in result.coverage.min(axis=1)],
        "local_curve": [int(v) for v in result.local_per_frame],
    }


def coverage_experiment(
    clip: Clip,
    n_workers: int = 4,
    cap: float = 0.30,
    region_px: int = 280,
    seed: int = 0,
    maps: dict[str, SceneCoverage] | None = None,
) -> dict[str, Any]:
    """Motion-estimation error and per-policy coverage on ``clip`` (see the module docstring).

    ``maps``, when given, receives each policy's ground-truth ledger (per-worker seen maps) by name.
    """
    t0 = time.perf_counter()
    estimated = track_offsets(clip.frames)
    track_s = time.perf_counter() - t0
    true = (clip.offsets - clip.offsets[0]).astype(float)
    steps = np.array([estimate_shift(clip.frames[t - 1], clip.frames[t])[:2] for t in range(1, clip.n_frames)])
    step_err = np.abs(steps - np.diff(true, axis=0)).max(axis=1) if len(steps) else np.zeros(1)
    grid = WindowGrid(clip.frame_size)
    keep = keep_local_from_masks(grid, clip.object_masks)
    policies = {}
    for name, (policy, workers) in _policies(n_workers, cap, region_px, seed).items():
        result = replay(policy, clip.frame_size, estimated, true, keep)
        policies[name] = {"workers": workers, **_summary(result, clip.n_frames, keep)}
        if maps is not None:
            maps[name] = result.ledger
    # the price of a cap: windows held back on the edge, for more workers and looser caps
    cap_sweep = []
    for workers in (n_workers, 2 * n_workers):
        for swept in (0.2, 0.3, 0.4, 0.5):
            r = replay(StickyPolicy(workers, region_px=region_px, coverage_cap=swept), clip.frame_size,
                       estimated, true, keep)
            row = _summary(r, clip.n_frames, keep)
            cap_sweep.append({"workers": workers, "cap": swept,
                              "max_worker_scene_coverage_any_frame": row["max_worker_scene_coverage_any_frame"],
                              "held_back_per_frame_mean": row["held_back_per_frame_mean"]})
    return {
        "clip": {"frames": clip.n_frames, "frame_size": list(clip.frame_size), "scene_size": list(clip.scene_size),
                 "content_windows": len(grid.content_ids),
                 "keep_local_per_frame_mean": round(float(np.mean([len(k) for k in keep])), 2),
                 "keep_local_curve": [len(k) for k in keep]},
        "motion": {"step_error_px_max": round(float(step_err.max()), 3),
                   "step_error_px_mean": round(float(step_err.mean()), 3),
                   "drift_px_max": round(float(np.abs(estimated - true).max()), 2),
                   "track_ms_per_frame": round(1000 * track_s / clip.n_frames, 2)},
        "settings": {"n_workers": n_workers, "coverage_cap": cap, "region_px": region_px,
                     "margin_px": StickyPolicy(1).margin_px},
        "policies": policies,
        "cap_sweep": cap_sweep,
    }


def reuse_experiment(clip: Clip, threshold: float = 6.0, cell_px: int = 8) -> dict[str, Any]:
    """Windows sent with static-window reuse vs every content window of every frame."""
    grid = WindowGrid(clip.frame_size)
    reuse = WindowReuse(grid, threshold=threshold, cell_px=cell_px)
    sent = [len(reuse.changed(f)) for f in clip.frames]
    total = clip.n_frames * len(grid.content_ids)
    return {"frames": clip.n_frames, "threshold": threshold, "cell_px": cell_px,
            "windows_sent": int(sum(sent)), "windows_without_reuse": total,
            "sent_share": round(sum(sent) / total, 4),
            "sent_per_frame_after_first_mean": round(float(np.mean(sent[1:])) if len(sent) > 1 else 0.0, 2)}


def plot_coverage(results: dict[str, Any], path: str) -> None:
    """Max (line) and min..max band of per-worker scene coverage per policy; edge windows per frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_local) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for name, r in results["policies"].items():
        hi, lo = np.asarray(r["max_coverage_curve"]), np.asarray(r["min_coverage_curve"])
        frames = np.arange(1, len(hi) + 1)
        (line,) = ax.plot(frames, hi, label=f"{name}: max {r['max_worker_scene_coverage']:.2f}")
        ax.fill_between(frames, lo, hi, color=line.get_color(), alpha=0.15)
        if r["held_back_per_frame_mean"] > 0:
            ax_local.plot(frames, r["local_curve"], color=line.get_color(), label=name)
    keep_curve = results["clip"]["keep_local_curve"]
    ax_local.plot(np.arange(1, len(keep_curve) + 1), keep_curve, color="grey", label="keep-local (every policy)")
    cap = results["settings"]["coverage_cap"]
    ax.axhline(cap, color="k", ls="--", lw=0.8)
    ax.set(xlabel="frame", ylabel="share of the scene seen by a worker", ylim=(0, 1.02),
           title=f"Per-worker cumulative scene coverage ({results['settings']['n_workers']} workers; band: "
                 "min..max worker)")
    ax.legend(fontsize=8, loc="center right")
    ax_local.set(xlabel="frame", ylabel="content windows computed on the edge",
                 ylim=(0, results["clip"]["content_windows"]), title="Edge windows per frame")
    ax_local.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_seen_maps(
    maps: dict[str, SceneCoverage], names: list[str], scene: np.ndarray, scene_origin: tuple[int, int], path: str
) -> None:
    """One row per policy, one panel per worker: the scene, bright where that worker has seen it.

    ``scene_origin``: scene-photo pixel of ledger coordinate ``(0, 0)`` (the first frame's offset).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_workers = max(maps[n].n_workers for n in names)
    fig, axes = plt.subplots(len(names), n_workers, figsize=(2.4 * n_workers, 2.6 * len(names)), squeeze=False)
    dim = (scene.astype(np.float32) * 0.25).astype(np.uint8)
    for row, name in enumerate(names):
        ledger = maps[name]
        for w in range(n_workers):
            ax = axes[row][w]
            ax.axis("off")
            if w >= ledger.n_workers:
                continue
            seen, (oy, ox) = ledger.seen_map(w)
            view = dim.copy()
            # paste the seen map into scene-photo coordinates (clipped to the photo)
            y0, x0 = oy + scene_origin[0], ox + scene_origin[1]
            sy0, sx0 = max(0, y0), max(0, x0)
            sy1, sx1 = min(scene.shape[0], y0 + seen.shape[0]), min(scene.shape[1], x0 + seen.shape[1])
            mask = seen[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0]
            view[sy0:sy1, sx0:sx1][mask] = scene[sy0:sy1, sx0:sx1][mask]
            ax.imshow(view[::4, ::4])  # panels are ~190 px wide: full resolution only bloats the PNG
            ax.set_title(f"{name}\nworker {w}: {ledger.coverage(w):.2f}", fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedvit.eval.video_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="frames of the pan clip")
    parser.add_argument("--frame-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--scale", type=float, default=3.0, help="upscaling of the scene photo")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cap", type=float, default=0.30, help="coverage cap of the sticky+cap policy")
    parser.add_argument("--region-px", type=int, default=280, help="side of a sticky scene region")
    parser.add_argument("--static-frames", type=int, default=60, help="frames of the static-camera clip")
    parser.add_argument("--json", default="docs/video_results.json")
    parser.add_argument("--figure", default="docs/figures/video_coverage.png")
    parser.add_argument("--maps-figure", default="docs/figures/video_seen_maps.png",
                        help="per-worker seen maps of naive-random, sticky and the capped policies")
    args = parser.parse_args(argv)
    size = (args.frame_size[0], args.frame_size[1])
    clip = pan_clip(args.frames, size, scale=args.scale)
    maps: dict[str, SceneCoverage] = {}
    results = coverage_experiment(clip, args.workers, args.cap, args.region_px, maps=maps)
    results["reuse_static_camera"] = reuse_experiment(static_clip(args.static_frames, size))
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    text = json.dumps(results, indent=1)
    # per-frame curves on one line each (readable, diff-friendly)
    text = re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    with open(args.json, "w") as f:
        f.write(text + "\n")
    plot_coverage(results, args.figure)
    shown = ["naive-random", "sticky", f"sticky+cap{args.cap:.2f}", f"sticky+cap{args.cap:.2f} confined"]
    origin = (int(clip.offsets[0, 0]), int(clip.offsets[0, 1]))
    plot_seen_maps(maps, shown, scene_photo("astronaut", args.scale), origin, args.maps_figure)
    for name, r in results["policies"].items():
        print(f"{name:34s} coverage at {CHECKPOINTS}: max "
              + " ".join(f"{max(v):.3f}" for v in r["coverage_at"].values())
              + f" | edge windows/frame {r['local_per_frame_mean']:.2f} (max {r['local_per_frame_max']}, "
              f"held back {r['held_back_per_frame_mean']:.2f})")
    for row in results["cap_sweep"]:
        print(f"cap sweep: {row['workers']} workers, cap {row['cap']:.2f}: max coverage "
              f"{row['max_worker_scene_coverage_any_frame']:.3f}, held back {row['held_back_per_frame_mean']:.2f}"
              "/frame")
    print("motion:", results["motion"])
    print("reuse (static camera):", results["reuse_static_camera"])
    print(f"wrote {args.json}, {args.figure} and {args.maps_figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
