"""Privacy evaluation of a distribution plan: exposure, reconstruction and detection attacks, per image,
aggregated into a table (`pedvit.privacy.aggregate`; Markdown + JSON) with figures (`pedvit.privacy.figures`).

Input is plain data so any caller (the ``pedvit eval privacy`` CLI, notebooks, tests) can use it::

    views = view_masks(grid, assignment.worker_windows, halo_px)       # pedvit.privacy.views
    result = evaluate_views(photo.image, views, scheme="checker", name=photo.name, colluders=(1, 2, 3))
    rows = aggregate([result, ...])                                    # pedvit.privacy.aggregate

Row semantics (one row per scheme, number of workers and number of colluders k):

* ``k = 1``: every worker is an attacker on its own; means/maxima run over all (image, worker) pairs,
  ``reconstruction_success_rate`` is the share of (image, worker) pairs whose best attack succeeded, and
  ``faces_found`` counts full-image faces that at least one single worker re-detects.
* ``k >= 2``: per image, the worst-case coalition of k workers (largest union of views, see
  :func:`pedvit.privacy.exposure.worst_case_coalition`) attacks with the union of its views; means/maxima
  and the success rate run over images.
* ``faces_found_by_one_worker`` always repeats the k = 1 figure for easy comparison.
* faces are counted with the ``face`` kind (MTCNN + Haar, :class:`pedvit.privacy.detection.Attacker`) when it was
  run, else with Haar's ``frontal_face``; ``text_in_full_image`` / ``text_found_by_one_worker`` count the
  lines RapidOCR reads in the full image and the ones a single worker's view re-reads.

``reconstruction_success_rate`` (the headline) counts views whose best attack beats the better no-knowledge
baseline on the unseen pixels by ``UNSEEN_MARGIN`` (:mod:`pedvit.privacy.reconstruction`);
``full_image_ssim_success_rate`` the first version's ``best SSIM >= threshold`` and better than the mid-grey
baseline. With ``positions="hidden"`` every view is first placed by the jigsaw attacker
(:mod:`pedvit.privacy.jigsaw`), and rows carry its ``placement_accuracy``.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from pedvit.privacy.detection import DEFAULT_KINDS, detect, detection_attack
from pedvit.partition import WindowGrid
from pedvit.privacy.exposure import view_exposure, worst_case_coalition
from pedvit.privacy.jigsaw import cut_pieces, place, placed_view, slots_for
from pedvit.privacy.reconstruction import (
    DEFAULT_ATTACKS,
    UNSEEN_MARGIN,
    _luma,
    grey_baseline,
    reconstruction_attack,
)
from pedvit.privacy.aggregate import aggregate
from pedvit.privacy.figures import plot_reconstructions, plot_success_vs_colluders, plot_views

__all__ = [
    "downscale",
    "evaluate_views",
    "cloud_only_views",
    "evaluate_cloud_only",
    "PrivacyReport",
    "TABLE_COLUMNS",
]

#: columns shown in the Markdown table (the JSON rows hold more)
TABLE_COLUMNS: tuple[str, ...] = (
    "scheme", "n_workers", "positions", "colluders", "images", "mean_exposure", "max_exposure", "max_largest_region",
    "placement_accuracy", "mean_ssim_unseen_best", "mean_ssim_unseen_mean_colour", "mean_unseen_gain",
    "reconstruction_success_rate", "full_image_ssim_success_rate", "faces_in_full_image", "faces_found",
    "faces_found_by_one_worker", "text_in_full_image", "text_found_by_one_worker", "objects_in_full_image",
    "objects_found",
)


def downscale(image: np.ndarray, views: Mapping[str, np.ndarray], max_side: int | None
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The attacks' working copy: ``image`` (area-averaged) and the ``views`` (nearest neighbour) with the long
    side at most ``max_side``; every tool that must reproduce the evaluation's geometry uses this."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, dict(views)
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small = {k: cv2.resize(v.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
             for k, v in views.items()}
    return img, small


def json_ready(obj: Any) -> Any:
    """JSON-safe copy: drop keys starting with '_', NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def evaluate_views(
    image: np.ndarray,
    views: Mapping[Any, np.ndarray],
    *,
    threshold: float = 0.5,
    colluders: Sequence[int] = (1, 2, 3),
    name: str = "image",
    scheme: str = "",
    methods: Sequence[str] = DEFAULT_ATTACKS,
    detect_kinds: Sequence[str] = DEFAULT_KINDS,
    detect_fill: str = "black",
    content: np.ndarray | None = None,
    max_side: int | None = 1024,
    work_side: int = 256,
    keep_images: bool = False,
    positions: str = "known",
    windows: Mapping[Any, Sequence[int]] | None = None,
    grid: WindowGrid | None = None,
    non_adjacent: bool = True,
    slot_sets: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """All privacy attacks on one image split into per-worker views.

    Args:
        image: ``H x W x 3`` uint8 RGB original.
        views: worker id -> ``H x W`` bool visibility mask (original pixels the worker received). Keys are
            converted to ``str``. Windows kept on the edge are simply in no view.
        threshold: SSIM threshold of reconstruction success.
        colluders: coalition sizes k to evaluate (sizes above the number of workers are skipped).
        name, scheme: labels copied into the result.
        methods: reconstruction attacks (see :data:`pedvit.privacy.reconstruction.ATTACKS`).
        detect_kinds: Haar detector kinds (see :data:`pedvit.privacy.detection.CASCADES`); ``()`` skips.
        detect_fill: how a view's unseen pixels look to the detectors: ``"black"`` or ``"inpaint"``.
        content: optional ``H x W`` bool content area for the exposure's ``content_fraction``.
        max_side: images with a longer side are downscaled (views by nearest neighbour) before the
            reconstruction and detection attacks, for speed; exposure always uses full resolution.
        work_side: working size of the OpenCV inpainting attacks.
        keep_images: keep arrays for figures under the ``"_arrays"`` key (dropped from JSON).
        positions: ``"known"`` (the attacker knows where its windows sit) or ``"hidden"`` (position hiding:
            it must place its pieces first, :mod:`pedvit.privacy.jigsaw`; needs ``windows`` and ``grid``).
        windows: worker id -> the window ids it received (for ``"hidden"``).
        grid: the image's ``WindowGrid`` (for ``"hidden"``).
        non_adjacent: the scheme's rule the jigsaw attacker may use: no two pieces of one worker touch.
        slot_sets: with a deterministic scheme, the window-id sets it hands out (the jigsaw attacker reruns it).

    Returns:
        JSON-ready dict: ``image, scheme, n_workers, shape, threshold, baseline_grey, full_detections``,
        ``workers`` (worker -> ``exposure, reconstruction, detection, success``) and ``coalitions``
        (``str(k)`` -> ``members, selection, exposure, reconstruction, detection, success``).

    Success of a view = best-of SSIM >= ``threshold`` and > the grey baseline's SSIM: on smooth images a
    constant grey guess already scores high SSIM (retina: 0.66), and a view must beat knowing nothing.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {img.dtype} {img.shape}")
    vs = {str(k): np.asarray(v, dtype=bool) for k, v in views.items()}
    if not vs:
        raise ValueError("no views")
    for k, v in vs.items():
        if v.shape != img.shape[:2]:
            raise ValueError(f"view {k!r} has shape {v.shape}, image is {img.shape[:2]}")
    ks = sorted({int(k) for k in colluders if 1 <= int(k) <= len(vs)})
    if positions not in ("known", "hidden"):
        raise ValueError(f"positions must be 'known' or 'hidden', got {positions!r}")
    if positions == "hidden" and (windows is None or grid is None):
        raise ValueError("positions='hidden' needs the window ids of every view and the grid")
    coalition_views, coalition_info = _coalitions(vs, ks)
    small_img, small_views = downscale(img, {**vs, **coalition_views}, max_side)
    attacker = _ViewAttacker(small_img, small_views, methods=methods, threshold=threshold, work_side=work_side,
                             keep_images=keep_images, positions=positions, grid=grid, non_adjacent=non_adjacent,
                             slot_sets=slot_sets,
                             windows={str(k): list(v) for k, v in windows.items()} if windows is not None else None)
    full_det = detect(small_img, detect_kinds) if detect_kinds else {}
    attacker.detections = (detection_attack(small_img, small_views, kinds=detect_kinds, fill=detect_fill,
                                            full_detections=full_det) if detect_kinds else {})
    workers = {w: attacker.outcome(w, [w], view_exposure(mask, content)) for w, mask in vs.items()}
    coalitions: dict[str, Any] = {}
    for k_str, info in coalition_info.items():
        label, head = info["_view"], {"members": info["members"], "selection": info["selection"]}
        if label in workers:  # a "coalition" of one is that worker's view: reuse its results
            coalitions[k_str] = {**head, **{key: workers[label][key] for key in _OUTCOME_KEYS}}
        else:
            coalitions[k_str] = {**head, **attacker.outcome(label, [str(m) for m in info["members"]],
                                                            view_exposure(coalition_views[label], content))}
    det = attacker.detections
    result: dict[str, Any] = {
        "image": name,
        "scheme": scheme,
        "n_workers": len(vs),
        "positions": positions,
        "shape": list(img.shape[:2]),
        "eval_shape": list(small_img.shape[:2]),
        "threshold": threshold,
        "methods": list(methods),
        "detect_fill": detect_fill,
        "baseline_grey": attacker.baseline.as_dict(),
        "full_detections": {kind: len(v) for kind, v in full_det.items()},
        "found_by_any_single_worker": {kind: len(det[kind].found_by_any_view_of(list(vs))) for kind in det},
        "workers": workers,
        "coalitions": coalitions,
    }
    if keep_images:
        result["_arrays"] = attacker.arrays
    return result


#: What `_ViewAttacker.outcome` reports per attacking view (a worker or a coalition).
_OUTCOME_KEYS = ("exposure", "reconstruction", "success", "unseen_success", "placement_accuracy", "detection")


def _coalitions(views: Mapping[str, np.ndarray], ks: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """The worst-case coalition of each size k: (label -> union view for k >= 2, str(k) -> members, selection
    and the label of its view; a coalition of one is labelled by its worker)."""
    coalition_views: dict[str, np.ndarray] = {}
    coalition_info: dict[str, dict[str, Any]] = {}
    for k in ks:
        members, union, how = worst_case_coalition(views, k)
        if k == 1:
            label = str(members[0])
        else:
            label = f"k={k}"
            coalition_views[label] = union
        coalition_info[str(k)] = {"members": list(members), "selection": how, "_view": label}
    return coalition_views, coalition_info


class _ViewAttacker:
    """The reconstruction (after the jigsaw placement, with hidden positions) and detection attacks on the
    downscaled views of one image; keeps the arrays for figures when asked."""

    def __init__(self, image: np.ndarray, views: Mapping[str, np.ndarray], *, methods: Sequence[str], threshold: float,
                 work_side: int, keep_images: bool, positions: str, windows: Mapping[str, Sequence[int]] | None,
                 grid: WindowGrid | None, non_adjacent: bool, slot_sets: Sequence[Sequence[int]] | None) -> None:
        self.image, self.views = image, views
        self.methods, self.threshold, self.work_side, self.keep_images = methods, threshold, work_side, keep_images
        self.positions, self.windows, self.non_adjacent, self.slot_sets = positions, windows, non_adjacent, slot_sets
        self.luma = _luma(image)
        self.baseline = grey_baseline(image, original_luma=self.luma)
        self.slots = slots_for(grid, image.shape[:2]) if positions == "hidden" else []
        self.detections: dict[str, Any] = {}
        self.arrays: dict[str, Any] = {"image": image, "views": {}, "reconstructions": {}}

    def outcome(self, label: str, members: Sequence[str], exposure: Any) -> dict[str, Any]:
        """Exposure, reconstruction, success, placement accuracy and detections of the view `label`."""
        placement_accuracy, placed = None, None
        if self.positions == "hidden":
            pieces = cut_pieces(self.image, self.slots, {m: self.windows[m] for m in members})  # type: ignore[index]
            placement = place(pieces, self.slots, self.image.shape[:2], non_adjacent=self.non_adjacent,
                              slot_sets=self.slot_sets)
            placement_accuracy = placement.accuracy
            placed = placed_view(self.image.shape[:2], pieces, self.slots, placement)
        rec = reconstruction_attack(self.image, self.views[label], methods=self.methods, threshold=self.threshold,
                                    work_side=self.work_side, keep_images=self.keep_images, original_luma=self.luma,
                                    placed=placed)
        rec.success = bool(rec.success and rec.best.ssim > self.baseline.ssim)
        if self.keep_images:
            self.arrays["views"][label] = self.views[label]
            self.arrays["reconstructions"][label] = rec.images
        return {
            "exposure": exposure.as_dict(),
            "reconstruction": rec.as_dict(),
            "success": rec.success,
            "unseen_success": rec.unseen_success,
            "placement_accuracy": placement_accuracy,
            "detection": {kind: len(self.detections[kind].found_by_view[label]) for kind in self.detections},
        }


def cloud_only_views(image_or_shape: np.ndarray | tuple[int, int]) -> dict[str, np.ndarray]:
    """Views of the cloud-only baseline: one worker ("cloud") receives every pixel."""
    shape = image_or_shape.shape[:2] if isinstance(image_or_shape, np.ndarray) else tuple(image_or_shape)
    return {"cloud": np.ones(shape, dtype=bool)}


def evaluate_cloud_only(image: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    """:func:`evaluate_views` of the cloud-only baseline (scheme ``"cloud-only"``, 1 worker, k = 1)."""
    kwargs.setdefault("scheme", "cloud-only")
    kwargs["colluders"] = (1,)
    return evaluate_views(image, cloud_only_views(image), **kwargs)


# --- report ------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


class PrivacyReport:
    """Collects :func:`evaluate_views` results and writes ``privacy.md``, ``privacy.json`` and figures.

    Example::

        rep = PrivacyReport(threshold=0.5)
        rep.evaluate(img, views, scheme="checker", name="astronaut", figures=True)
        rep.evaluate(img, cloud_only_views(img), scheme="cloud-only", name="astronaut", colluders=(1,))
        paths = rep.write("out/privacy")
    """

    def __init__(self, title: str = "pedvit privacy evaluation", *, threshold: float = 0.5,
                 colluders: Sequence[int] = (1, 2, 3), max_figures: int = 6) -> None:
        self.title = title
        self.threshold = threshold
        self.colluders = tuple(colluders)
        self.max_figures = max_figures
        self.results: list[dict[str, Any]] = []

    def add(self, result: dict[str, Any]) -> None:
        """Add one :func:`evaluate_views` result (arrays beyond ``max_figures`` are dropped to save memory)."""
        if "_arrays" in result and sum("_arrays" in r for r in self.results) >= self.max_figures:
            result = {k: v for k, v in result.items() if k != "_arrays"}
        self.results.append(result)

    def evaluate(self, image: np.ndarray, views: Mapping[Any, np.ndarray], *, figures: bool = False,
                 **kwargs: Any) -> dict[str, Any]:
        """Run :func:`evaluate_views` with this report's threshold/colluders and add the result."""
        kwargs.setdefault("threshold", self.threshold)
        kwargs.setdefault("colluders", self.colluders)
        res = evaluate_views(image, views, keep_images=figures, **kwargs)
        self.add(res)
        return res

    def add_cloud_only(self, image: np.ndarray, **kwargs: Any) -> dict[str, Any]:
        """Evaluate and add the cloud-only baseline for ``image``."""
        kwargs.setdefault("threshold", self.threshold)
        res = evaluate_cloud_only(image, **kwargs)
        self.add(res)
        return res

    def rows(self) -> list[dict[str, Any]]:
        """Aggregated table rows (:func:`aggregate`)."""
        return aggregate(self.results)

    def to_markdown(self, rows: list[dict[str, Any]] | None = None) -> str:
        """Markdown document: table plus the definitions needed to read it."""
        rows = self.rows() if rows is None else rows
        lines = [f"# {self.title}", ""]
        lines.append("| " + " | ".join(TABLE_COLUMNS) + " |")
        lines.append("|" + "---|" * len(TABLE_COLUMNS))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in TABLE_COLUMNS) + " |")
        lines += [
            "",
            "Threat model: honest-but-curious cloud workers; see `pedvit/privacy/threat_model.md`.",
            "",
            "* exposure: share of original pixels a worker (k = 1) or the worst-case coalition of k",
            "  colluders (largest union of views; exact search, greedy beyond 256 subsets) received;",
            "  largest region = largest 8-connected visible patch.",
            "* positions: `known` (the worker knows where its windows sit) or `hidden` (position hiding: the",
            "  jigsaw attacker places its pieces first; `placement_accuracy` = share put in the true slot).",
            "* unseen-pixel SSIM: the SSIM map averaged over the pixels the attacker did not receive, for the",
            "  best attack (mean fill, OpenCV Telea/NS inpainting, push-pull, the learned U-Net), chosen with",
            "  the ground truth (pessimistic), and for the no-knowledge baselines (grey; the mean colour of",
            "  the attacker's own pixels); `mean_unseen_gain` = best attack minus the better baseline.",
            f"* reconstruction success (headline): unseen gain >= {UNSEEN_MARGIN}. Full-image success (the",
            f"  first version's metric, which credits the pixels a view holds): best full-image SSIM >= {self.threshold}",
            "  and above the grey image's.",
            "* faces/text/objects: detections in the full image (faces: MTCNN + Haar; text: lines RapidOCR reads;",
            "  objects: all kinds incl. Haar), and how many of them the attacker re-detects in its view (unseen",
            "  pixels black); k = 1 counts objects any single worker finds.",
        ]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | pathlib.Path, *, figures: bool = True) -> dict[str, pathlib.Path]:
        """Write ``privacy.md``, ``privacy.json`` and, if ``figures``, PNGs into ``out_dir``.

        Returns:
            name -> written path (``"markdown"``, ``"json"``, ``"success_vs_colluders"``,
            ``"views:<image>:<scheme>"``, ``"reconstructions:<image>:<scheme>"``).
        """
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        paths: dict[str, pathlib.Path] = {}
        md = out / "privacy.md"
        md.write_text(self.to_markdown(rows))
        paths["markdown"] = md
        js = out / "privacy.json"
        js.write_text(json.dumps(json_ready({"title": self.title, "threshold": self.threshold, "rows": rows,
                                         "results": self.results}), indent=1))
        paths["json"] = js
        if figures:
            paths["success_vs_colluders"] = plot_success_vs_colluders(rows, out / "success_vs_colluders.png")
            for r in self.results:
                arr = r.get("_arrays")
                if not arr:
                    continue
                stem = f"{r['image']}_{r['scheme'] or 'views'}_n{r['n_workers']}_{r.get('positions', 'known')}".replace("/", "-")
                worker_views = {w: arr["views"][w] for w in r["workers"]}
                paths[f"views:{r['image']}:{r['scheme']}"] = plot_views(
                    arr["image"], worker_views, out / f"views_{stem}.png", title=stem)
                # reconstructions of the most exposed single worker (the most dangerous view)
                worst = max(r["workers"], key=lambda w: r["workers"][w]["exposure"]["fraction"])
                paths[f"reconstructions:{r['image']}:{r['scheme']}"] = plot_reconstructions(
                    arr["image"], arr["views"][worst], arr["reconstructions"][worst],
                    r["workers"][worst]["reconstruction"]["per_method"],
                    out / f"reconstructions_{stem}_w{worst}.png", title=f"{stem}, worker {worst}")
        return paths
