"""The privacy report's figures (PNG, matplotlib Agg, no pyplot state): each worker's view, an attacker's
reconstructions, and success against the number of colluders."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .views import masked_view


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_views(image: np.ndarray, views: Mapping[str, np.ndarray], path: str | pathlib.Path,
               *, title: str = "") -> pathlib.Path:
    """PNG: the original and each view (unseen pixels black), with the exposure fraction in each title."""
    items = list(views.items())
    fig = Figure(figsize=(2.6 * (len(items) + 1), 2.9))
    axes = fig.subplots(1, len(items) + 1, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("original (edge)", fontsize=9)
    for ax, (w, m) in zip(axes[1:], items):
        ax.imshow(masked_view(image, m))
        ax.set_title(f"{w}: {m.mean():.0%} seen", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, pathlib.Path(path))


def plot_reconstructions(image: np.ndarray, mask: np.ndarray, reconstructions: Mapping[str, np.ndarray],
                         scores: Mapping[str, Mapping[str, Any]] | None, path: str | pathlib.Path,
                         *, title: str = "") -> pathlib.Path:
    """PNG: original, the attacker's view, then each attack's reconstruction with its SSIM/PSNR."""
    items = list(reconstructions.items())
    fig = Figure(figsize=(2.6 * (len(items) + 2), 2.9))
    axes = fig.subplots(1, len(items) + 2, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("original", fontsize=9)
    axes[1].imshow(masked_view(image, mask))
    axes[1].set_title(f"view ({mask.mean():.0%} seen)", fontsize=9)
    for ax, (m, rec) in zip(axes[2:], items):
        ax.imshow(rec)
        s = (scores or {}).get(m)
        ax.set_title(f"{m}\nSSIM {s['ssim']:.2f} PSNR {s['psnr']:.1f}" if s else m, fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, pathlib.Path(path))


def plot_success_vs_colluders(rows: Sequence[Mapping[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """PNG: reconstruction success rate and mean exposure vs number of colluders, one line per scheme/n."""
    fig = Figure(figsize=(10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    series: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['scheme']} (n={r['n_workers']}, {r.get('positions', 'known')})", []).append(r)
    for label, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["colluders"])
        ks = [r["colluders"] for r in rs]
        ax1.plot(ks, [r["reconstruction_success_rate"] for r in rs], marker="o", label=label)
        ax2.plot(ks, [r["mean_exposure"] for r in rs], marker="o", label=label)
    ax1.set(xlabel="colluding workers k", ylabel="unseen-pixel reconstruction success", ylim=(-0.05, 1.05))
    ax2.set(xlabel="colluding workers k", ylabel="mean exposed fraction", ylim=(-0.05, 1.05))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=8, loc="lower right")
    return _save(fig, pathlib.Path(path))
