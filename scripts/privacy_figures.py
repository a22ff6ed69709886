"""Figures of docs/privacy.md from `pedvit eval privacy --report DIR` runs (no numbers are typed in by hand).

    python scripts/privacy_figures.py curves   --report out/privacy_n --out docs/figures/privacy_success_curves.png
    python scripts/privacy_figures.py attacks  --photo astronaut --out docs/figures/privacy_attacks.png
    python scripts/privacy_figures.py threshold --report out/privacy_n --out docs/figures/privacy_threshold.png
    python scripts/privacy_figures.py table --report out/privacy_n --report out/privacy_schemes

* ``curves``: unseen-pixel success vs N (k = 1) and vs k (N = 4), hidden and known positions;
* ``attacks``: one panel per attack on one worker's view (N = 4, interleaved): what it received, each
  inpainting attack with known positions, the jigsaw's placement and the U-Net on it with hidden positions;
* ``threshold``: the views whose unseen-SSIM gain lies just below and just above the success margin, with the
  best attack's reconstruction, so a reader can judge the margin;
* ``table``: the Markdown rows docs/privacy.md and the README quote (``--report`` folders, one or more).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from pedvit.data import photo
from pedvit.eval.privacy_eval import DETERMINISTIC_SCHEMES
from pedvit.partition import Constraints, WindowGrid, assign
from pedvit.privacy.jigsaw import cut_pieces, place, placed_view, slots_for
from pedvit.privacy.reconstruction import ATTACKS, UNSEEN_MARGIN, reconstruction_attack
from pedvit.privacy.views import masked_view
from pedvit.privacy.report import downscale

SIDE = 256


def _view(name: str, scheme: str, n: int, members: list[str], positions: str):
    """(small image, true mask, placed view or None, placement accuracy) of one worker / coalition."""
    image = photo(name).image
    grid = WindowGrid(image.shape[:2])
    a = assign(grid, n, scheme, constraints=Constraints(), seed=0)
    windows = {str(w): ids for w, ids in a.worker_windows.items()}
    ids = [i for m in members for i in windows[m]]
    small, masks = downscale(image, {"view": grid.original_mask(ids, 0)}, SIDE)  # the evaluation's geometry
    mask = masks["view"]
    if positions == "known":
        return small, mask, None, None
    slots = slots_for(grid, small.shape[:2])
    pieces = cut_pieces(small, slots, {m: windows[m] for m in members})
    placement = place(pieces, slots, small.shape[:2], non_adjacent=scheme != "contiguous",
                      slot_sets=list(windows.values()) if scheme in DETERMINISTIC_SCHEMES else None)
    return small, mask, placed_view(small.shape[:2], pieces, slots, placement), placement.accuracy


def _save(fig: Figure, out: pathlib.Path) -> None:
    FigureCanvasAgg(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    print(f"wrote {out}")


def curves(report: pathlib.Path, out: pathlib.Path) -> None:
    rows = json.loads((report / "privacy.json").read_text())["rows"]
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for positions, style in (("hidden", "o-"), ("known", "s--")):
        by_n = sorted((r["n_workers"], r["reconstruction_success_rate"]) for r in rows
                      if r["scheme"] == "interleaved" and r["colluders"] == 1 and r.get("positions") == positions)
        by_k = sorted((r["colluders"], r["reconstruction_success_rate"]) for r in rows
                      if r["scheme"] == "interleaved" and r["n_workers"] == 4 and r.get("positions") == positions)
        if by_n:
            ax1.plot(*zip(*by_n), style, label=f"positions {positions}")
        if by_k:
            ax2.plot(*zip(*by_k), style, label=f"positions {positions}")
    ax1.set(xlabel="workers N (interleaved, single worker)", ylabel="unseen-pixel success rate", xscale="log")
    ax1.set_xticks([2, 4, 8, 16], labels=["2", "4", "8", "16"])
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax2.set(xlabel="colluding workers k (interleaved, N = 4)", ylabel="unseen-pixel success rate")
    ax2.set_xticks([1, 2, 3])
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    _save(fig, out)


def attacks(name: str, out: pathlib.Path) -> None:
    small, mask, _, _ = _view(name, "interleaved", 4, ["0"], "known")
    _, _, placed, accuracy = _view(name, "interleaved", 4, ["0"], "hidden")
    methods = [m for m in ATTACKS if m != "ns"]
    known = reconstruction_attack(small, mask, methods=methods, keep_images=True)
    hidden = reconstruction_attack(small, mask, methods=["unet"], keep_images=True, placed=placed)
    panels = [("original", small), ("worker 0 received", masked_view(small, mask))]
    panels += [(f"{m}, positions known\nunseen SSIM {known.per_method[m].ssim_unseen:.3f}", known.images[m]) for m in methods]
    panels += [(f"jigsaw placement\n({accuracy:.0%} of pieces in place)", placed[0]),
               (f"unet on the placement\nunseen SSIM {hidden.per_method['unet'].ssim_unseen:.3f}", hidden.images["unet"])]
    fig = Figure(figsize=(2.6 * 4, 2.9 * 2))
    axes = fig.subplots(2, 4).ravel()
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    for ax in axes[len(panels):]:
        ax.axis("off")
    _save(fig, out)


def threshold(report: pathlib.Path, out: pathlib.Path, count: int = 3) -> None:
    data = json.loads((report / "privacy.json").read_text())
    views = []
    for r in data["results"]:
        for w, res in r["workers"].items():
            gain = res["reconstruction"].get("unseen_gain")
            if gain is not None and r["scheme"] != "semantic":  # semantic views depend on detections
                views.append((gain, r["image"], r["scheme"], r["n_workers"], w, r.get("positions", "known")))
    below = sorted((v for v in views if v[0] < UNSEEN_MARGIN), key=lambda v: -v[0])[:count]
    above = sorted((v for v in views if v[0] >= UNSEEN_MARGIN), key=lambda v: v[0])[:count]
    chosen = below + above
    fig = Figure(figsize=(2.6 * 3, 2.7 * len(chosen)))
    axes = fig.subplots(len(chosen), 3)
    for row, (gain, name, scheme, n, w, positions) in zip(axes, chosen):
        small, mask, placed, _ = _view(name, scheme, n, [w], positions)
        res = reconstruction_attack(small, mask, methods=[m for m in ATTACKS if m != "ns"], keep_images=True, placed=placed)
        best = res.best_unseen_method
        verdict = "success" if gain >= UNSEEN_MARGIN else "no success"
        for ax, title, img in zip(row, ("original", f"worker {w} view ({positions} positions)",
                                        f"{best}: gain {gain:+.3f} ({verdict})"),
                                  (small, placed[0] if placed is not None else masked_view(small, mask), res.images[best])):
            ax.imshow(img)
            ax.set_title(f"{name}, {scheme}, N={n}\n{title}" if title == "original" else title, fontsize=8)
            ax.axis("off")
    _save(fig, out)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(reports: list[pathlib.Path]) -> None:
    rows = [r for rep in reports for r in json.loads((rep / "privacy.json").read_text())["rows"]]
    print("| scheme | N | positions | k | views | mean exposure | placement accuracy | unseen SSIM: best attack "
          "| mean colour | grey | mean gain | max gain | success (unseen, headline) | success (full-image SSIM) "
          "| best attack most often |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    seen = set()
    for r in sorted(rows, key=lambda r: (r["scheme"] != "cloud-only", r["scheme"], r["n_workers"], r["positions"], r["colluders"])):
        key = (r["scheme"], r["n_workers"], r["positions"], r["colluders"])
        if key in seen:
            continue
        seen.add(key)
        shares = {k[len("best_unseen_share_"):]: v for k, v in r.items() if k.startswith("best_unseen_share_")}
        top = f"{max(shares, key=shares.get)} ({_pct(max(shares.values()))})" if shares else "-"
        print(f"| {r['scheme']} | {r['n_workers']} | {r['positions']} | {r['colluders']} | {r['units']} | "
              f"{_num(r['mean_exposure'])} | {_pct(r.get('placement_accuracy'))} | {_num(r.get('mean_ssim_unseen_best'))} | "
              f"{_num(r.get('mean_ssim_unseen_mean_colour'))} | {_num(r.get('mean_ssim_unseen_grey'))} | "
              f"{_num(r.get('mean_unseen_gain'))} | {_num(r.get('max_unseen_gain'))} | "
              f"{_pct(r['reconstruction_success_rate'])} | {_pct(r['full_image_ssim_success_rate'])} | "
              f"{top} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=["curves", "attacks", "threshold", "table"])
    p.add_argument("--report", type=pathlib.Path, action="append", help="a `pedvit eval privacy --report` folder")
    p.add_argument("--out", type=pathlib.Path, default=None)
    p.add_argument("--photo", default="astronaut")
    args = p.parse_args()
    if args.figure != "table" and args.out is None:
        p.error(f"{args.figure} needs --out")
    if args.figure == "attacks":
        attacks(args.photo, args.out)
    elif not args.report:
        p.error(f"{args.figure} needs --report")
    elif args.figure == "table":
        table(args.report)
    else:
        (curves if args.figure == "curves" else threshold)(args.report[0], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
