"""`pedvit eval privacy --detect-eval`: do annotated faces and text lines stay on the edge, and can a worker
(or a coalition) find them in what it received?

For every annotated image (:mod:`pedvit.eval.composite`) the edge's detectors of ``--keep-local`` decide the
keep-local windows exactly as the engine does (:func:`pedvit.partition.constraints_for_image`, margin 16 px +
halo); the ``semantic`` assignment gives the other windows to N workers. Measured:

* per class and size bucket, the **edge recall**: share of annotated regions all of whose windows stayed local;
* the share of content windows kept local (also on real photos without faces or text);
* the detectors' time per image, as a share of the monolithic encoder's (measured in the same run);
* the **attack**: the strongest detectors here run on each worker's view (unseen pixels black) and on the
  union of every coalition of k = 2, 3 workers: faces by MTCNN (down to 12 px) united with the Haar frontal and
  profile cascades, text by RapidOCR (the same DBNet plus its PP-OCRv4 recogniser). A region counts as found
  when a detection matches its box (IoU >= 0.3 or a centre inside the other); text also counts as *read* when
  the recognised string matches half of the annotated characters. The ``interleaved`` scheme (no detector)
  is attacked too, as a check that the attack finds what it is shown.
"""

from __future__ import annotations

import difflib
import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pedvit.eval.composite import CLEAN_PHOTOS, AnnotatedImage, GTRegion
from pedvit.partition import Constraints, WindowGrid, assign, constraints_for_image
from pedvit.partition.sensitivity import Region, sensitive_windows
from pedvit.privacy.detection import match_boxes
from pedvit.privacy.detection import Attacker

__all__ = ["BUCKETS", "evaluate_image", "evaluate_set", "clean_photo_share", "timing",
           "summarize_detect_eval", "format_detect_eval"]

Box = tuple[int, int, int, int]
#: size buckets (face side / text line height, px): lower bounds
BUCKETS: dict[str, tuple[int, ...]] = {"face": (0, 24, 48, 96), "text": (0, 12, 24, 48)}


def bucket(kind: str, size: float) -> str:
    """``"24-48"``-style label of ``size`` in the buckets of ``kind``."""
    edges = BUCKETS[kind]
    lo = max(e for e in edges if e <= size)
    i = edges.index(lo)
    return f"{lo}-{edges[i + 1]}" if i + 1 < len(edges) else f">={lo}"


def _read(truth: str, seen: Sequence[str]) -> bool:
    t = "".join(c for c in truth.upper() if c.isalnum())
    for s in seen:
        s2 = "".join(c for c in s.upper() if c.isalnum())
        m = difflib.SequenceMatcher(None, t, s2).get_matching_blocks()
        if t and sum(b.size for b in m) >= 0.5 * len(t):
            return True
    return False


def _attack_view(att: Attacker, image: np.ndarray, mask: np.ndarray, gts: Sequence[GTRegion]) -> dict[str, list[int]]:
    """Indices of ``gts`` the attacker finds (and, for text, reads) in the view ``mask``."""
    touched = [i for i, g in enumerate(gts) if mask[g.box[1]:g.box[3], g.box[0]:g.box[2]].any()]
    found: dict[str, list[int]] = {"found": [], "read": []}
    if not touched:
        return found
    view = np.where(mask[..., None], image, 0).astype(np.uint8)
    if any(gts[i].kind == "face" for i in touched):
        boxes = att.faces(view)
        faces = [i for i in touched if gts[i].kind == "face"]
        hit = match_boxes([gts[i].box for i in faces], boxes)
        found["found"] += [faces[j] for j in hit]
    texts = [i for i in touched if gts[i].kind == "text"]
    if texts:
        lines = att.text(view)  # (box, recognised string)
        for i in texts:
            near = [s for b, s in lines if match_boxes([gts[i].box], [b])]
            if near:
                found["found"].append(i)
            if near and _read(gts[i].text, near):
                found["read"].append(i)
    return found


def evaluate_image(item: AnnotatedImage, *, classes: Sequence[str] = ("faces", "text"), n_workers: int = 4,
                   colluders: int = 3, halo_px: int = 0, attacker: Attacker | None = None,
                   baseline_scheme: str | None = "interleaved") -> dict[str, Any]:
    """Edge recall, windows kept local, detector time and the attack on one annotated image."""
    img = item.image
    grid = WindowGrid(img.shape[:2])
    t0 = time.perf_counter()
    regions: list[Region] = []
    cons = constraints_for_image(img, grid, Constraints(), keep_local=classes, halo_px=halo_px,
                                 regions_out=regions, objects=False)
    detect_s = time.perf_counter() - t0
    gts = item.regions
    kept = [bool(sensitive_windows(grid, [Region(g.kind, (g.box[1], g.box[0], g.box[3], g.box[2]), 1.0)], 0)
                 <= cons.keep_local) for g in gts]
    out: dict[str, Any] = {
        "image": item.name, "shape": list(img.shape[:2]), "detect_s": detect_s,
        "content_windows": len(grid.content_ids), "local_windows": len(cons.keep_local & set(grid.content_ids)),
        "detections": len(regions),
        "regions": [{"kind": g.kind, "size": g.size, "bucket": bucket(g.kind, g.size), "kept": k,
                     "found_k": {}, "read_k": {}, "baseline_found": None} for g, k in zip(gts, kept)],
    }
    if attacker is None:
        return out
    schemes = [("semantic", cons)] + ([(baseline_scheme, Constraints())] if baseline_scheme else [])
    for scheme, c in schemes:
        a = assign(grid, n_workers, scheme, constraints=c, seed=0)
        masks = [grid.original_mask(ids, halo_px) for ids in a.worker_windows.values() if ids]
        ks = range(1, min(colluders, len(masks)) + 1) if scheme == "semantic" else range(1, 2)
        for k in ks:
            found: set[int] = set()
            read: set[int] = set()
            for combo in itertools.combinations(range(len(masks)), k):
                m = np.logical_or.reduce([masks[j] for j in combo])
                r = _attack_view(attacker, img, m, gts)
                found |= set(r["found"])
                read |= set(r["read"])
            for i, reg in enumerate(out["regions"]):
                if scheme == "semantic":
                    reg["found_k"][str(k)] = i in found
                    reg["read_k"][str(k)] = i in read
                else:
                    reg["baseline_found"] = i in found
    return out


def evaluate_set(items: Sequence[AnnotatedImage], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`evaluate_image` over ``items``."""
    return [evaluate_image(it, **kwargs) for it in items]


def clean_photo_share(classes: Sequence[str] = ("faces", "text")) -> dict[str, Any]:
    """Windows kept local on the built-in photos without faces or text (:data:`CLEAN_PHOTOS`)."""
    from pedvit.data import real_photos

    per: dict[str, float] = {}
    for p in real_photos(min_count=1, names=list(CLEAN_PHOTOS)):
        grid = WindowGrid(p.image.shape[:2])
        c = constraints_for_image(p.image, grid, Constraints(), keep_local=classes, objects=False)
        per[p.name] = len(c.keep_local & set(grid.content_ids)) / max(1, len(grid.content_ids))
    return {"photos": len(per), "mean_local_share": float(np.mean(list(per.values()))) if per else None,
            "per_photo": per}


def timing(images: Sequence[np.ndarray], classes: Sequence[str] = ("faces", "text"), repeats: int = 3
           ) -> dict[str, Any]:
    """Detector time against the monolithic MobileSAM encoder (``SamPredictor.set_image``) per image.

    The two are run alternately ``repeats`` times on each image and the fastest run of each is kept, so that
    both see the same load on a shared machine; wall-clock and process CPU time (all threads) are both kept:
    then both once more on one thread each (the encoder with ``torch.set_num_threads(1)``, the detectors one
    after the other): the ratio of compute work, which a machine shared with other jobs distorts least (a
    two-thread encoder slows far more than the single-thread detectors when another job takes a core).

    Returns:
        ``{"per_image": [{"encoder_s", "detect_s", "per_detector_s", "share"}], "mean_share", "encoder_s",
        "detect_s"}`` (means over images).
    """
    import torch

    from pedvit.edge.predictor import SamPredictor
    from pedvit.models import build_model
    from pedvit.partition.detectors import load_detectors, run_detectors

    pred = SamPredictor(build_model("mobile_sam"))
    dets = load_detectors(classes)
    rows = []
    for img in images:
        pred.set_image(img)  # warm-up
        run_detectors(img, classes)
        enc: list[tuple[float, float]] = []  # (wall, CPU) seconds
        both: list[tuple[float, float]] = []
        per: dict[str, list[float]] = {d.name: [] for d in dets}
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            pred.set_image(img)
            enc.append((time.perf_counter() - t, time.process_time() - c))
            t, c = time.perf_counter(), time.process_time()
            run_detectors(img, classes)  # what the edge runs: all detectors, concurrently
            both.append((time.perf_counter() - t, time.process_time() - c))
            for d in dets:  # each alone, for the record
                t = time.perf_counter()
                d.detect(img)
                per[d.name].append(time.perf_counter() - t)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one core each: compute work, without thread contention on a shared machine
        try:
            enc1, det1 = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                pred.set_image(img)
                enc1.append(time.perf_counter() - t)
                t = time.perf_counter()
                for d in dets:
                    d.detect(img)
                det1.append(time.perf_counter() - t)
        finally:
            torch.set_num_threads(threads)
        e, b = min(enc), min(both)
        rows.append({"shape": list(img.shape[:2]), "encoder_s": e[0], "detect_s": b[0],
                     "encoder_cpu_s": min(x[1] for x in enc), "detect_cpu_s": min(x[1] for x in both),
                     "per_detector_s": {k: min(v) for k, v in per.items()}, "share": b[0] / e[0],
                     "cpu_share": min(x[1] for x in both) / min(x[1] for x in enc),
                     "encoder_1thread_s": min(enc1), "detect_1thread_s": min(det1),
                     "share_1thread": min(det1) / min(enc1)})
    return {"per_image": rows, "mean_share": float(np.mean([r["share"] for r in rows])),
            "mean_cpu_share": float(np.mean([r["cpu_share"] for r in rows])),
            "mean_share_1thread": float(np.mean([r["share_1thread"] for r in rows])),
            "encoder_s": float(np.mean([r["encoder_s"] for r in rows])),
            "detect_s": float(np.mean([r["detect_s"] for r in rows]))}


def _rate(xs: Sequence[bool]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def summarize_detect_eval(per_image: Sequence[dict[str, Any]], *, clean: dict[str, Any] | None = None,
                          timings: dict[str, Any] | None = None, config: dict[str, Any] | None = None
                          ) -> dict[str, Any]:
    """Per set (annotated / composite), class and size bucket: regions, edge recall, attack counts; windows kept
    local; detector time against the encoder. JSON-ready."""
    out: dict[str, Any] = {"config": config or {}, "sets": {}}
    for set_name in sorted({r["set"] for r in per_image}):
        rs = [r for r in per_image if r["set"] == set_name]
        regs = [g for r in rs for g in r["regions"]]
        table: dict[str, Any] = {}
        for kind in ("face", "text"):
            for b in [*(bucket(kind, e) for e in BUCKETS[kind]), "all", "criterion"]:
                if b == "all":
                    sel = [g for g in regs if g["kind"] == kind]
                elif b == "criterion":  # faces >= 24 px, text lines >= 12 px
                    sel = [g for g in regs if g["kind"] == kind and g["size"] >= (24 if kind == "face" else 12)]
                else:
                    sel = [g for g in regs if g["kind"] == kind and g["bucket"] == b]
                if not sel:
                    continue
                row: dict[str, Any] = {"regions": len(sel), "kept_local": sum(g["kept"] for g in sel),
                                       "edge_recall": _rate([g["kept"] for g in sel])}
                for k in sorted({k for g in sel for k in g["found_k"]}):
                    row[f"found_by_k{k}"] = sum(g["found_k"].get(k, False) for g in sel)
                    if kind == "text":
                        row[f"read_by_k{k}"] = sum(g["read_k"].get(k, False) for g in sel)
                base = [g["baseline_found"] for g in sel if g["baseline_found"] is not None]
                if base:
                    row["interleaved_found_by_one_worker"] = sum(base)
                table[f"{kind} {b}"] = row
        out["sets"][set_name] = {
            "images": len(rs), "table": table,
            "mean_local_share": _rate([r["local_windows"] / max(1, r["content_windows"]) for r in rs]),
            "mean_detect_s": float(np.mean([r["detect_s"] for r in rs])),
        }
    out["clean_photos"] = clean
    if timings is not None:
        out["timing"] = timings
    out["per_image"] = list(per_image)
    return out


def format_detect_eval(summary: dict[str, Any]) -> str:
    """Markdown tables of :func:`summarize_detect_eval`."""
    lines = []
    for set_name, s in summary["sets"].items():
        lines += [f"### {set_name} ({s['images']} images, windows kept local {100 * s['mean_local_share']:.1f} %, "
                  f"detectors {s['mean_detect_s']:.3f} s per image)", "",
                  "| class, size (px) | regions | edge recall | found by 1 worker | by k=2 | by k=3 | text read by 1 / 2 / 3 "
                  "| interleaved: found by 1 worker |", "|---|---|---|---|---|---|---|---|"]
        for key, r in s["table"].items():
            read = " / ".join(str(r.get(f"read_by_k{k}", "-")) for k in (1, 2, 3)) if key.startswith("text") else "-"
            lines.append(f"| {key} | {r['regions']} | {100 * r['edge_recall']:.1f} % | {r.get('found_by_k1', '-')} | "
                         f"{r.get('found_by_k2', '-')} | {r.get('found_by_k3', '-')} | {read} | "
                         f"{r.get('interleaved_found_by_one_worker', '-')} |")
        lines.append("")
    c = summary.get("clean_photos")
    if c:
        lines.append(f"Photos without faces or text: {c['photos']}, windows kept local {100 * c['mean_local_share']:.1f} % "
                     "on average.")
    t = summary.get("timing")
    if t:
        lines.append(f"Detector time as a share of the monolithic encoder, mean over {len(t['per_image'])} images: "
                     f"{100 * t['mean_share_1thread']:.1f} % on one thread each; {100 * t['mean_share']:.1f} % wall-clock "
                     f"as the edge runs them (detectors {t['detect_s']:.3f} s concurrently, encoder {t['encoder_s']:.2f} s "
                     "on 2 threads; fastest of alternating runs).")
    return "\n".join(lines) + "\n"
