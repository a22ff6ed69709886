"""`VideoSession`: segment and follow one object through a stream of frames, with temporal privacy.

Frames come one by one (H x W x 3 uint8 RGB). The first frame is prompted by the caller (points and/or a
box); each later frame is prompted from the last good mask: its bounding box (moved by the camera motion,
moved on by the object's own velocity between the last two good masks, and grown by a margin), a positive
point at the mask's most interior pixel, and the mask itself as a dense prompt (its low-res logits, moved
the same way; only when the frame's camera-motion estimate is reliable: after a cut or on a black frame the
old mask would be drawn on nothing); of the decoder's three candidates the one closest to the predicted box wins. The dense prompt
is what keeps a split encoder on the object: with box and point alone, a mask that spilled onto a similar
neighbouring region at a window border shifted the next box, and the static generated clip was lost from
frame 10 (mean IoU 0.36 instead of 0.97). When the mask is lost (empty, or its area changes more than
``max_area_change`` times from the last good one) the frame is prompted again without the point and recorded
with ``lost=True``; a mask that is still lost does not replace the last good box and mask (which keep moving
with the camera and the velocity). A camera-motion estimate with a weak phase-correlation peak
(response below ``min_motion_response``: a featureless or cut frame) counts as no motion.

With a `DistributedSamPredictor`, each frame's windows are placed by a temporal policy
(`pedvit.video.assign`: ``naive`` or ``sticky`` with an optional per-worker scene-coverage cap) registered on a
scene mosaic by the estimated camera motion (`pedvit.video.motion`); keep-local windows (the engine's
semantic scheme: faces, text) stay on the edge, and so does, for ``keep_local_memory`` frames, the scene
region where such content was found (a detector that misses a face in one frame does not send it), and
windows whose pixels did not change since they were last
computed (`pedvit.video.reuse.WindowReuse`) reuse their cached features and are not sent again. The engine
checks each frame's assignment against the single-image constraints and writes it to its ledger with the
video's id, the frame index and its scene offset, so that `pedvit ledger check` can replay the coverage caps
over the whole video (`pedvit.edge.video_ledger`). With a plain `SamPredictor` the whole encoder runs here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from pedvit.partition import Assignment, Box, Constraints, WindowGrid
from pedvit.video import NaivePolicy, SceneCoverage, StickyPolicy, TemporalPolicy, WindowReuse, estimate_shift
from pedvit.video.coverage import window_frame_boxes
from pedvit.video.memory import SensitiveMemory

from .distributed import DistributedSamPredictor
from .engine import CallerRequest
from .mask_tools import box_iou, mask_boxes
from .predictor import SamPredictor, validate_image

__all__ = ["FrameRecord", "FrameSizeError", "VideoSession", "TEMPORAL_POLICIES"]

TEMPORAL_POLICIES = ("naive", "sticky")
#: the logit given to the part of a moved dense prompt that enters from outside the previous frame
_BACKGROUND_LOGIT = -20.0


class FrameSizeError(ValueError):
    """A frame whose size differs from the stream's first frame (the session is unchanged; skip the frame)."""


@dataclass
class FrameRecord:
    """What happened to one frame.

    Attributes:
        index: the frame's index in the session (0-based; skipped frames take no index).
        shift: camera motion ``(dy, dx)`` from the previous frame, in pixels (``(0, 0)`` for the first, and
            when the estimate is unreliable).
        motion_response: the motion estimate's phase-correlation peak (0..1; 1 for the first frame).
        offset: the frame's estimated scene offset ``(dy, dx)`` (the running sum of shifts).
        windows_per_worker: worker name -> window ids it was sent in this frame.
        kept_local: keep-local windows (sensitive content) the edge computed.
        held_back: windows the temporal policy kept on the edge (share or coverage cap).
        remembered_local: windows kept on the edge because they overlap sensitive content found in one of the
            last ``keep_local_memory`` frames (moved with the camera), though not found in this one.
        reused: windows whose cached features were reused (neither computed nor sent).
        lost: the mask was lost and the frame was re-prompted from the last good box.
        prompt: the prompt used: ``{"box": [x0, y0, x1, y1]}`` and/or ``{"points": [[x, y], ...]}``.
        mask_area: pixels of the frame's mask.
        score: the decoder's predicted IoU of the mask.
        timings_ms: ``motion``, ``encode``, ``decode`` and ``total`` milliseconds.
        max_worker_scene_coverage: the largest share of the scene any single worker has seen so far.
    """

    index: int
    shift: tuple[float, float]
    motion_response: float
    offset: tuple[float, float]
    windows_per_worker: dict[str, list[int]]
    kept_local: list[int]
    held_back: list[int]
    reused: list[int]
    lost: bool
    prompt: dict[str, Any]
    mask_area: int
    score: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    max_worker_scene_coverage: float = 0.0
    remembered_local: list[int] = field(default_factory=list)


def _box_of(mask: np.ndarray) -> np.ndarray:
    """4 (x0, y0, x1, y1) float box around an H x W bool mask (exclusive ends)."""
    return mask_boxes(torch.from_numpy(mask)[None])[0].double().numpy()


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of an H x W bool mask farthest from its border (the distance transform's max)."""
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x), float(y)


def _make_policy(temporal: str, n_workers: int, coverage_cap: float | None, region_px: int) -> TemporalPolicy:
    if temporal == "naive":
        if coverage_cap is not None:
            raise ValueError("a coverage cap needs the sticky policy (--temporal sticky)")
        return NaivePolicy(n_workers, "interleaved")
    if temporal == "sticky":
        return StickyPolicy(n_workers, region_px=region_px, coverage_cap=coverage_cap)
    raise ValueError(f"temporal policy must be one of {', '.join(TEMPORAL_POLICIES)}, got {temporal!r}")


class VideoSession:
    """Follows one object through frames given one by one (`add_frame`).

    Args:
        predictor: a `DistributedSamPredictor` (windows placed by the temporal policy) or a `SamPredictor`
            (monolithic: no windows leave the edge).
        points: N x 2 (x, y) prompt points of the first frame (labels: `labels`, default all foreground).
        labels: N point labels (1 foreground, 0 background).
        box: 4 (x0, y0, x1, y1) prompt box of the first frame.
        temporal: "naive" (per-frame interleaved assignment) or "sticky" (workers keep their scene regions).
        coverage_cap: most share of the scene one worker may see (sticky only); None: no cap.
        reuse: reuse the cached features of windows that did not change (distributed only).
        region_px: sticky: side of a worker's scene region in pixels.
        max_area_change: a mask whose area is more than this many times smaller or larger than the last good
            mask's counts as lost.
        min_motion_response: camera-motion estimates with a weaker phase-correlation peak count as no motion.
        box_margin: the previous box is grown by this share of its size (at least 8 px) on every side.
        keep_local_memory: sensitive content (the engine's keep-local windows: faces, text) found in one of the
            last this many frames stays on the edge where it now is (moved by the camera motion), even when
            the detector misses it in the current frame; 0: each frame decides alone.
        video_id: the id the ledger records carry (default: a fresh random id).
    """

    def __init__(self, predictor: SamPredictor, *, points: Sequence[Sequence[float]] | None = None,
                 labels: Sequence[int] | None = None, box: Sequence[float] | None = None, temporal: str = "sticky",
                 coverage_cap: float | None = None, reuse: bool = True, region_px: int = 280,
                 max_area_change: float = 1.5, min_motion_response: float = 0.05, box_margin: float = 0.1,
                 keep_local_memory: int = 10, video_id: str | None = None) -> None:
        if points is None and box is None:
            raise ValueError("the first frame needs a prompt: points and/or a box")
        self.first_prompt = self._first_prompt(points, labels, box)
        if not max_area_change > 1:
            raise ValueError(f"max_area_change must be > 1, got {max_area_change!r}")
        if box_margin < 0:
            raise ValueError(f"box_margin must be >= 0, got {box_margin!r}")
        self.sensitive_memory = SensitiveMemory(keep_local_memory)
        self.predictor = predictor
        self.max_area_change, self.min_motion_response = max_area_change, min_motion_response
        self.box_margin = box_margin
        self.video_id = video_id or uuid.uuid4().hex[:16]
        self.distributed = isinstance(predictor, DistributedSamPredictor)
        self.worker_names: list[str] = list(predictor.engine.members()) if self.distributed else []
        self.temporal, self.coverage_cap = temporal, coverage_cap
        self.policy = (_make_policy(temporal, len(self.worker_names), coverage_cap, region_px)
                       if self.worker_names else None)
        self.use_reuse = reuse and self.distributed
        self.records: list[FrameRecord] = []
        self.frame_size: tuple[int, int] | None = None
        self._grid: WindowGrid | None = None
        self._reuse: WindowReuse | None = None
        self._features: dict[tuple[str, int], np.ndarray] = {}
        self._previous: np.ndarray | None = None
        self._offset = (0.0, 0.0)
        self._good_box: np.ndarray | None = None  # last good mask's box, in the current frame's pixels
        self._good_area = 0
        self._good_point: tuple[float, float] | None = None
        self._good_logits: np.ndarray | None = None  # 256 x 256 low-res logits of the last good mask
        self._window_boxes: dict[int, Box] = {}  # content window id -> its frame box (fixed by the frame size)
        self._velocity = (0.0, 0.0)  # the object's own motion in the frame, px per frame (x, y)
        n = max(1, len(self.worker_names))
        self.policy_coverage = SceneCoverage(n)  # the policy's booking (estimated motion, grown by its margin)
        self.coverage = SceneCoverage(n)  # what the workers were really sent, as `ledger check` replays it

    @staticmethod
    def _first_prompt(points: Any, labels: Any, box: Any) -> dict[str, np.ndarray]:
        prompt: dict[str, np.ndarray] = {}
        if points is not None:
            coords = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            prompt["points"] = coords
            prompt["labels"] = np.ones(len(coords), int) if labels is None else np.asarray(labels, int)
        if box is not None:
            prompt["box"] = np.asarray(box, dtype=np.float64).reshape(4)
        return prompt

    @property
    def max_worker_scene_coverage(self) -> float:
        """The largest share of the scene any single worker has been sent so far (0 when monolithic)."""
        return self.coverage.max_worker_scene_coverage() if self.worker_names else 0.0

    # ------------------------------------------------------------------------------------------ frames
    def add_frame(self, frame: np.ndarray) -> tuple[np.ndarray, FrameRecord]:
        """Segment the next H x W x 3 uint8 RGB frame: (H x W bool mask, its `FrameRecord`).

        Raises `FrameSizeError` for a frame of another size than the first (nothing changes: skip it),
        ValueError / TypeError for a frame that is not an image.
        """
        frame = validate_image(frame)
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if self.frame_size is None:
            self._start(size)
        elif size != self.frame_size:
            raise FrameSizeError(f"frame {len(self.records)} is {size[0]} x {size[1]}, the stream is "
                                 f"{self.frame_size[0]} x {self.frame_size[1]}: frame skipped")
        started = time.perf_counter()
        shift, response, registered = (0.0, 0.0), 1.0, False
        if self._previous is not None:
            dy, dx, response = estimate_shift(self._previous, frame)
            registered = bool(np.isfinite([dy, dx, response]).all() and response >= self.min_motion_response)
            if registered:
                shift = (dy, dx)
        self._offset = (self._offset[0] + shift[0], self._offset[1] + shift[1])
        motion_s = time.perf_counter() - started
        index = len(self.records)
        assignment = self._encode(frame, index)
        encoded = time.perf_counter()
        mask, score, prompt, lost = self._segment(shift, registered)
        done = time.perf_counter()
        self._previous = frame
        self._mark_sent(assignment["windows_per_worker"])
        record = FrameRecord(
            index=index, shift=shift, motion_response=float(response), offset=self._offset, lost=lost, prompt=prompt,
            mask_area=int(mask.sum()), score=score, max_worker_scene_coverage=self.max_worker_scene_coverage,
            timings_ms={"motion": 1000 * motion_s, "encode": 1000 * (encoded - started - motion_s),
                        "decode": 1000 * (done - encoded), "total": 1000 * (done - started)},
            **assignment,
        )
        self.records.append(record)
        return mask, record

    def _start(self, size: tuple[int, int]) -> None:
        self._check_prompt_inside(size)
        self.frame_size = size
        model = self.predictor.model
        window_tokens = self.predictor.plan.window_tokens if self.distributed else 14
        self._grid = WindowGrid(size, input_size=model.img_size, window_tokens=window_tokens)
        self._window_boxes = window_frame_boxes(self._grid)
        if self.use_reuse:
            self._reuse = WindowReuse(self._grid)

    def _check_prompt_inside(self, size: tuple[int, int]) -> None:
        h, w = size
        corners = [self.first_prompt["box"].reshape(2, 2)] if "box" in self.first_prompt else []
        for xy in np.concatenate(corners + [self.first_prompt.get("points", np.zeros((0, 2)))]):
            if not (np.isfinite(xy).all() and 0 <= xy[0] <= w and 0 <= xy[1] <= h):
                raise ValueError(f"prompt point {xy.tolist()} lies outside the {w} x {h} first frame")

    # ------------------------------------------------------------------------------------------ encode
    def _encode(self, frame: np.ndarray, index: int) -> dict[str, Any]:
        """Compute the frame's embedding; the placement part of its `FrameRecord`."""
        empty: dict[str, Any] = {"windows_per_worker": {}, "kept_local": [], "held_back": [], "reused": [],
                                 "remembered_local": []}
        if not self.distributed:
            self.predictor.set_image(frame)
            return empty
        assert self._grid is not None
        self.policy_coverage.add_frame(self.frame_size, self._offset)
        self.coverage.add_frame(self.frame_size, self._offset)
        content = set(self._grid.content_ids)
        unchanged = frozenset(content - set(self._reuse.changed(frame))) if self._reuse is not None else frozenset()
        # windows reused now must have features: a window never computed is computed (on the edge if unchanged)
        reusable = unchanged & {wid for _, wid in self._features}
        placed: dict[str, Any] = {}

        def assign(grid: WindowGrid, constraints: Constraints, members: Sequence[str]) -> Assignment:
            return self._assign(grid, constraints, members, index, reusable, placed)

        caller = CallerRequest(assign=assign if self.policy is not None else None, reuse=reusable,
                               feature_cache=self._features if self.use_reuse else None,
                               extra={"video": self._ledger_extra(index)}, may_receive=self._within_cap)
        self.predictor.set_frame(frame, caller)
        run = self.predictor.last_run
        assert run is not None
        return {
            "windows_per_worker": {n: sorted(w.windows) for n, w in run.workers.items() if w.windows},
            "kept_local": sorted(run.keep_local),
            "held_back": placed.get("held_back", []),
            "remembered_local": placed.get("remembered_local", []),
            "reused": list(run.extra.get("reused_windows", [])),
        }

    def _assign(self, grid: WindowGrid, constraints: Constraints, members: Sequence[str], index: int,
                reusable: frozenset[int], placed: dict[str, Any]) -> Assignment:
        """The policy's assignment of this frame over the engine's available `members` (a worker that is not
        available now has its windows computed on the edge)."""
        assert self.policy is not None
        detected = frozenset(constraints.keep_local)
        remembered = self.sensitive_memory.windows(self._window_boxes, self._offset, index) - detected
        self.sensitive_memory.remember(self._window_boxes, self._offset, index, detected)
        keep = detected | remembered
        placed["remembered_local"] = sorted(remembered)
        frame_assignment = self.policy.assign_frame(index, grid, np.asarray(self._offset), keep | reusable,
                                                    self.policy_coverage)
        by_member: dict[int, tuple[int, ...]] = {i: () for i in range(len(members))}
        local = set(frame_assignment.local)
        for worker, ids in frame_assignment.worker_windows.items():
            name = self.worker_names[worker]
            if name in members:
                by_member[list(members).index(name)] = tuple(ids)
            else:
                local.update(ids)
        placed["held_back"] = sorted(local - keep - reusable)
        return Assignment(by_member, tuple(sorted(local)), tuple(grid.padding_ids), f"temporal-{self.temporal}")

    def _within_cap(self, name: str, window_id: int, held: frozenset[int]) -> bool:
        """May a failover or a hedge send worker `name` window `window_id` on top of the windows it `held` in this
        frame: yes if its scene coverage with all of them stays within the cap (as `ledger check` replays it)."""
        if self.coverage_cap is None:
            return True
        worker = self.worker_names.index(name)
        boxes = self._window_boxes
        scene = [SceneCoverage.scene_box(boxes[wid], self._offset) for wid in {*held, window_id} if wid in boxes]
        return self.coverage.coverage(worker, self.coverage.new_pixels_of(worker, scene)) <= self.coverage_cap

    def _ledger_extra(self, index: int) -> dict[str, Any]:
        """The video fields of a frame's ledger record (what `pedvit ledger check` replays)."""
        return {"id": self.video_id, "frame": index, "offset": [float(self._offset[0]), float(self._offset[1])],
                "workers": list(self.worker_names), "temporal": self.temporal, "coverage_cap": self.coverage_cap}

    def _mark_sent(self, windows_per_worker: dict[str, list[int]]) -> None:
        for name, ids in windows_per_worker.items():
            worker = self.worker_names.index(name)
            for wid in ids:
                self.coverage.mark(worker, SceneCoverage.scene_box(self._window_boxes[wid], self._offset))

    # ------------------------------------------------------------------------------------------ prompts
    def _segment(self, shift: tuple[float, float], registered: bool) -> tuple[np.ndarray, float, dict[str, Any], bool]:
        """(mask, score, prompt, lost) of the current embedding; `registered`: the camera-motion estimate from the
        previous frame is reliable (otherwise the previous mask is not used as a dense prompt)."""
        if not self.records:
            mask, score, logits = self._predict(self.first_prompt)
            self._remember(mask, logits, None)
            return mask, score, self._describe(self.first_prompt), False
        assert self._good_box is not None and self._good_point is not None
        # the scene moved by -shift in the frame: move the last good box and point with it, then predict the
        # object's own motion in the frame (constant velocity since the last two good masks)
        dx, dy = -shift[1], -shift[0]
        compensated = self._good_box + np.array([dx, dy, dx, dy])
        vx, vy = self._velocity
        self._good_box = compensated + np.array([vx, vy, vx, vy])
        self._good_point = (self._good_point[0] + dx + vx, self._good_point[1] + dy + vy)
        box = self._grown(self._good_box)
        prompt: dict[str, Any] = {"box": box}
        x, y = self._good_point
        h, w = self.frame_size or (0, 0)
        if 0 <= x < w and 0 <= y < h:
            prompt.update(points=np.array([[x, y]]), labels=np.array([1]))
        if registered:
            # the previous mask says where the object is only if this frame continues the previous one (not
            # after a cut, a black or a flat frame, where it would draw the old mask on nothing). Moved in place,
            # like the box: after a lost frame the next one starts from where the object should be now.
            self._good_logits = self._moved_logits(dx + vx, dy + vy)
            prompt["mask_input"] = self._good_logits[None]
        mask, score, logits = self._predict(prompt, self._good_box)
        lost = self._is_lost(mask)
        if lost:
            prompt = {k: v for k, v in prompt.items() if k in ("box", "mask_input")}
            mask, score, logits = self._predict(prompt, self._good_box)
        if not self._is_lost(mask):
            self._remember(mask, logits, compensated)
        return mask, score, self._describe(prompt), lost

    def _moved_logits(self, dx: float, dy: float) -> np.ndarray:
        """256 x 256: the last good mask's low-res logits moved by (dx, dy) frame pixels (camera motion plus
        the object's velocity); what enters from outside counts as background."""
        logits = np.asarray(self._good_logits, dtype=np.float32)  # over the padded model input, longest side first
        frame_to_logits = logits.shape[-1] / max(self.frame_size or (1,))
        move = np.float32([[1, 0, dx * frame_to_logits], [0, 1, dy * frame_to_logits]])
        moved = cv2.warpAffine(logits, move, logits.shape[::-1], flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=_BACKGROUND_LOGIT)
        return moved

    def _is_lost(self, mask: np.ndarray) -> bool:
        area, good = int(mask.sum()), self._good_area
        return area == 0 or not good / self.max_area_change <= area <= good * self.max_area_change

    def _remember(self, mask: np.ndarray, logits: np.ndarray, previous_box: np.ndarray | None) -> None:
        """A good mask: its box, area, interior point and 256 x 256 low-res `logits` (the next dense prompt); its
        centre's motion since `previous_box` (the last good box moved by the camera; None on the first frame)
        becomes the velocity the next prompt assumes."""
        self._good_logits = logits
        if not mask.any():
            return
        box = _box_of(mask)
        if previous_box is not None:
            centre, before = (box[:2] + box[2:]) / 2, (previous_box[:2] + previous_box[2:]) / 2
            self._velocity = (float(centre[0] - before[0]), float(centre[1] - before[1]))
        self._good_box, self._good_area = box, int(mask.sum())
        self._good_point = interior_point(mask)

    def _grown(self, box: np.ndarray) -> np.ndarray:
        """`box` grown by the margin and clipped to the frame (at least 1 px wide and high)."""
        h, w = self.frame_size or (0, 0)
        x0, y0, x1, y1 = box
        mx, my = max(8.0, self.box_margin * (x1 - x0)), max(8.0, self.box_margin * (y1 - y0))
        x0, x1 = np.clip([x0 - mx, x1 + mx], 0, w)
        y0, y1 = np.clip([y0 - my, y1 + my], 0, h)
        return np.array([min(x0, w - 1), min(y0, h - 1), max(x1, min(x0, w - 1) + 1), max(y1, min(y0, h - 1) + 1)])

    def _predict(self, prompt: dict[str, Any],
                 expected: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
        """(H x W mask, predicted IoU, its 256 x 256 low-res logits) for `prompt`. With `expected` (the box where the last good mask should be
        now) the decoder gives three candidates and the one closest to it in shape wins (box IoU, less the
        log area ratio): the single best-scored mask is often a part of the object (a piece cut at a window
        border by a split encoder), which then shrinks frame by frame."""
        multimask = expected is not None
        masks, scores, low_res = self.predictor.predict(
            point_coords=prompt.get("points"), point_labels=prompt.get("labels"), box=prompt.get("box"),
            mask_input=prompt.get("mask_input"), multimask_output=multimask)
        if not multimask:
            return masks[0], float(scores[0]), low_res[0]

        box_ious = box_iou(mask_boxes(torch.from_numpy(masks)), torch.from_numpy(expected)[None])[:, 0].numpy()

        def fit(i: int) -> float:
            if not masks[i].any():
                return -np.inf
            area_ratio = abs(np.log(max(1, int(masks[i].sum())) / max(1, self._good_area)))
            return float(box_ious[i]) - area_ratio

        best = max(range(len(masks)), key=lambda i: (round(fit(i), 2), scores[i]))
        return masks[best], float(scores[best]), low_res[best]

    @staticmethod
    def _describe(prompt: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "box" in prompt:
            out["box"] = [round(float(v), 1) for v in prompt["box"]]
        if "points" in prompt:
            out["points"] = [[round(float(x), 1), round(float(y), 1)] for x, y in prompt["points"]]
        if "mask_input" in prompt:
            out["previous_mask"] = True
        return out
